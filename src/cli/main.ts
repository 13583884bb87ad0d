import { Command, InvalidArgumentError, Option } from 'commander';
import { runSimulation, type SimulationSummary } from '../sim/run.ts';

/** Exit codes: 0 ok, 1 an invariant was violated, 2 bad usage. */
const EXIT_VIOLATION = 1;

function positiveInt(name: string, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > max)
      throw new InvalidArgumentError(`${name} must be an integer in 1..${max}`);
    return n;
  };
}

function formatSummary(s: SimulationSummary): string {
  const faults = Object.entries(s.faults)
    .map(([kind, n]) => `${kind} ${n}`)
    .join(', ');
  const lines = [
    `simulated ${s.simulatedSeconds.toFixed(1)} s of ${s.nodes} nodes × ${s.dbs} databases in ${s.wallMs} ms (seed ${s.seed})`,
    `faults injected: ${faults}`,
    `failovers: ${s.failovers}, highest epoch: ${s.maxEpoch}`,
    `longest leaderless stretch while the store was healthy: ${s.longestLeaderlessMsWhileHealthy} ms (bound ${s.livenessBoundMs} ms)`,
    `after healing: ${s.recoveredDatabases}/${s.dbs} databases with exactly one leader`,
    s.ok
      ? 'invariants: never two leaders (I1), epochs monotonic with one holder each (I2): held'
      : 'INVARIANTS VIOLATED:',
    ...s.violations.map((v) => `  ${v}`),
  ];
  return lines.join('\n');
}

export function buildProgram(): Command {
  const program = new Command()
    .name('hadb')
    .description('Highly available embedded SQLite with object storage as the source of truth')
    .showHelpAfterError()
    .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2));

  program
    .command('simulate')
    .description(
      'run the leader-election core of N nodes × M databases on simulated time with random crashes, ' +
        'partitions, clock drift and a slow store; check the safety invariants at every instant',
    )
    .addOption(new Option('--nodes <n>', 'nodes').default(3).argParser(positiveInt('--nodes', 64)))
    .addOption(
      new Option('--dbs <n>', 'databases').default(10).argParser(positiveInt('--dbs', 10_000)),
    )
    .addOption(
      new Option('--seconds <n>', 'simulated seconds')
        .default(60)
        .argParser(positiveInt('--seconds', 86_400)),
    )
    .addOption(
      new Option('--seed <n>', 'seed of the fault schedule (replays a run exactly)').argParser(
        positiveInt('--seed', 2 ** 31),
      ),
    )
    .option('--json', 'print the summary as one JSON object')
    .action(
      async (options: {
        nodes: number;
        dbs: number;
        seconds: number;
        seed?: number;
        json?: boolean;
      }) => {
        const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31) + 1;
        const showProgress = !options.json && process.stderr.isTTY;
        const summary = await runSimulation({
          nodes: options.nodes,
          dbs: options.dbs,
          seconds: options.seconds,
          seed,
          onProgress: (done) => {
            if (showProgress)
              process.stderr.write(
                `\rsimulating… ${Math.round(done * 100)}%${done >= 1 ? '\n' : ''}`,
              );
          },
        });
        process.stdout.write(
          `${options.json ? JSON.stringify(summary) : formatSummary(summary)}\n`,
        );
        if (!summary.ok) process.exitCode = EXIT_VIOLATION;
      },
    );

  return program;
}

await buildProgram().parseAsync(process.argv);
