import { connectivitySuite } from './agent-suite.js';

connectivitySuite('host-gw');
