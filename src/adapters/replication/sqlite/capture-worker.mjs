// The capture worker's entry. The sources are TypeScript: tsx compiles them here as in bin/hadb.js.
import { register } from 'tsx/esm/api';

register();
await import('./capture-thread.ts');
