#!/usr/bin/env node
// The sources are TypeScript; tsx compiles them on the fly so the package needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
