import { describe, expect, it } from 'vitest';
import { SimulatedClock } from 'xstate';
import { HandleCache, type Hibernatable } from '../../src/runtime/handle-cache.ts';

/** A database that records being closed; `busy` ones refuse. */
function fakeDb(name: string, closed: string[], busy = () => false): Hibernatable {
  return {
    hibernate: () => {
      if (busy()) return false;
      closed.push(name);
      return true;
    },
  };
}

describe('HandleCache', () => {
  it('closes what was idle for hibernateAfterMs, once, in one sweep', () => {
    const clock = new SimulatedClock();
    const closed: string[] = [];
    const cache = new HandleCache({ clock, hibernateAfterMs: 1000, maxOpen: false });
    const [a, b] = [fakeDb('a', closed), fakeDb('b', closed)];
    cache.touch(a);
    clock.increment(600);
    cache.touch(b);
    clock.increment(500);
    cache.sweep();
    expect(closed).toEqual(['a']);
    expect(cache.openCount).toBe(1);
    clock.increment(600);
    cache.sweep();
    cache.sweep();
    expect(closed).toEqual(['a', 'b']);
    expect(cache.openCount).toBe(0);
  });

  it('over the cap, closes the least recently used that can close', () => {
    const clock = new SimulatedClock();
    const closed: string[] = [];
    let aBusy = true;
    const cache = new HandleCache({ clock, hibernateAfterMs: false, maxOpen: 2 });
    const a = fakeDb('a', closed, () => aBusy);
    const [b, c, d] = [fakeDb('b', closed), fakeDb('c', closed), fakeDb('d', closed)];
    cache.touch(a);
    cache.touch(b);
    cache.touch(a); // now b is the least recently used
    cache.touch(c);
    expect(closed).toEqual(['b']);
    cache.touch(d); // a (least recent) is busy: c goes instead
    expect(closed).toEqual(['b', 'c']);
    expect(cache.openCount).toBe(2);
    aBusy = false;
    cache.touch(b);
    expect(closed).toEqual(['b', 'c', 'a']);
    cache.forget(d);
    expect(cache.openCount).toBe(1);
  });

  it('with hibernateAfterMs false, a sweep closes nothing', () => {
    const clock = new SimulatedClock();
    const closed: string[] = [];
    const cache = new HandleCache({ clock, hibernateAfterMs: false, maxOpen: false });
    cache.touch(fakeDb('a', closed));
    clock.increment(1e9);
    cache.sweep();
    expect(closed).toEqual([]);
  });

  it('sweeps on its own timer until stopped', () => {
    const clock = new SimulatedClock();
    const closed: string[] = [];
    const cache = new HandleCache({ clock, hibernateAfterMs: 100, maxOpen: false });
    cache.start(50);
    cache.touch(fakeDb('a', closed));
    clock.increment(150);
    expect(closed).toEqual(['a']);
    cache.stop();
    cache.touch(fakeDb('b', closed));
    clock.increment(1000);
    expect(closed).toEqual(['a']);
  });
});
