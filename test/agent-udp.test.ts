import { connectivitySuite } from './agent-suite.js';

connectivitySuite('udp');
