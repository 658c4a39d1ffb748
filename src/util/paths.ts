/** Where a lab keeps its state, logs and node dirs: one directory per lab. */
export const LAB_ROOT = '/run/weft/lab';
/** Where namespace topologies record their owner pid, so a sweep can tell live runs from dead ones. */
export const TOPO_OWNERS = '/run/weft-test';
/** The socket the CNI front forwards to when the config names none (native/cni-front.c has the same). */
export const CNI_SOCKET = '/run/weft/cni.sock';
