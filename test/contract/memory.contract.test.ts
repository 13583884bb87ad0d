import { describe } from 'vitest';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import { leaseStoreContract } from './lease-store.contract.ts';
import { storageContract } from './storage.contract.ts';

// Each view from forNode() is another client of the same state; a view whose node is cut off in
// 'fail' mode is a client of a down backend. ('drop' would never settle, which the contract
// forbids: callers bound their calls with timeouts instead.)

describe('memory lease store', () => {
  leaseStoreContract(async () => {
    const shared = new MemoryLeaseStore();
    let clients = 0;
    return {
      store: shared.forNode('main'),
      openAnother: async () => shared.forNode(`another-${++clients}`),
      openDown: async () => {
        shared.faults.cutOff('down', 'fail');
        return shared.forNode('down');
      },
      cleanup: async () => {},
    };
  });
});

describe('memory storage', () => {
  storageContract(async () => {
    const shared = new MemoryStorage();
    return {
      storage: shared.forNode('main'),
      openDown: async () => {
        shared.faults.cutOff('down', 'fail');
        return shared.forNode('down');
      },
      cleanup: async () => {},
    };
  });
});
