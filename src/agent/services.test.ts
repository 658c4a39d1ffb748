import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { podOfCniArgs } from './services.js';

describe('podOfCniArgs', () => {
  it('reads the pod kubelet names in CNI_ARGS', () => {
    assert.deepEqual(podOfCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc'), {
      namespace: 'shop',
      name: 'web-0',
    });
  });
  it('defaults the namespace, and a value may hold "="', () => {
    assert.deepEqual(podOfCniArgs('K8S_POD_NAME=a=b'), { namespace: 'default', name: 'a=b' });
  });
  it('is undefined without a pod name (a runtime that is not kubelet)', () => {
    for (const args of [undefined, '', 'IgnoreUnknown=1', 'K8S_POD_NAMESPACE=x', 'K8S_POD_NAME=']) assert.equal(podOfCniArgs(args), undefined, String(args));
  });
});
