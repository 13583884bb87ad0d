import { describe, expect, it } from 'vitest';
import { backoffDelay, doublingDelay } from '../../src/adapters/retry.ts';

describe('doublingDelay', () => {
  it('starts at the base and doubles on each retry', () => {
    expect([1, 2, 3, 4].map((attempt) => doublingDelay(attempt, 10, 10_000))).toEqual([
      10, 20, 40, 80,
    ]);
  });

  it('never grows past the cap', () => {
    expect([5, 6, 7, 50].map((attempt) => doublingDelay(attempt, 50, 1000))).toEqual([
      800, 1000, 1000, 1000,
    ]);
  });

  it('gives the sequence of a hand-written `delay = Math.min(delay * 2, max)` loop', () => {
    let delay = 100;
    for (let attempt = 1; attempt <= 20; attempt++) {
      expect(doublingDelay(attempt, 100, 5000)).toBe(delay);
      delay = Math.min(delay * 2, 5000);
    }
  });

  it('is the ceiling of the jittered backoffDelay', () => {
    expect(backoffDelay(4, 50, 2000, () => 0.5)).toBe(doublingDelay(4, 50, 2000) / 2);
  });
});
