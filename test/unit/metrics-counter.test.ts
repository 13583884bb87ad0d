import { describe, expect, it } from 'vitest';
import { MetricsRegistry } from '../../src/runtime/metrics.ts';

describe('a counter of the metrics registry', () => {
  it('counts labels written in any order into one series', () => {
    const registry = new MetricsRegistry();
    const requests = registry.counter('hadb_test_requests_total', 'Requests.');
    requests.inc({ op: 'get', outcome: 'ok' });
    requests.inc({ outcome: 'ok', op: 'get' }, 2);
    requests.inc({ op: 'get', outcome: 'ok' });
    requests.inc({ op: 'put', outcome: 'ok' });
    requests.inc();
    expect(registry.render()).toBe(
      [
        '# HELP hadb_test_requests_total Requests.',
        '# TYPE hadb_test_requests_total counter',
        'hadb_test_requests_total{op="get",outcome="ok"} 4',
        'hadb_test_requests_total{op="put",outcome="ok"} 1',
        'hadb_test_requests_total 1',
        '',
      ].join('\n'),
    );
  });
});
