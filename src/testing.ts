/**
 * `hadb/testing`: backends and tools for tests. In-memory storage and leases (one instance shared
 * by several nodes in one process makes a cluster), fault injection around any backend, and the
 * lease simulation: many nodes with drifting clocks on simulated time, checked for two leaders.
 */

export { type CutOffMode, type FaultOptions, Faults, type Latency } from './adapters/faults.ts';
export {
  createMemoryLeaseStore,
  type LeaseWrite,
  MemoryLeaseStore,
  type MemoryLeaseStoreOptions,
} from './adapters/lease/memory.ts';
export { createMemoryStorage, MemoryStorage } from './adapters/storage/memory.ts';
export { DriftingClock, SimClock } from './sim/clock.ts';
export {
  type EpochGrant,
  SimCluster,
  type SimClusterOptions,
  type SimNode,
} from './sim/cluster.ts';
export { runSimulation, type SimulationOptions, type SimulationSummary } from './sim/run.ts';
