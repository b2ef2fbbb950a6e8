/**
 * `vfio-ts bind` / `unbind` before they touch sysfs: an address that is not one, and a device
 * that does not exist (a fake /sys/bus/pci/devices), each one line with its exit status. Binding
 * for real needs root and a kernel: test/kernel/in-guest.test.ts runs it in a guest.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runBind, runUnbind } from '../../src/cli/bind.js';

async function run(f: typeof runBind, args: string[], sysfs: string) {
  const out: string[] = [];
  const err: string[] = [];
  const status = await f(args, { log: (l) => out.push(l), error: (l) => err.push(l) }, sysfs);
  return { status, out, err };
}

test('bind and unbind: no such device, not an address, usage; one line each', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-bind-'));
  try {
    const sysfs = join(dir, 'devices');
    mkdirSync(sysfs);
    for (const [f, name] of [
      [runBind, 'bind'],
      [runUnbind, 'unbind'],
    ] as const) {
      const cases: [string[], number, string][] = [
        [
          ['00:1f.7'],
          1,
          `vfio-ts ${name}: 0000:00:1f.7: ENODEV (no such PCI device: ${sysfs} has no 0000:00:1f.7; lspci -D lists the devices)`,
        ],
        [
          ['0000:00:3f.0'],
          2,
          `vfio-ts ${name}: '0000:00:3f.0' is not a PCI address (domain:bus:device.function, e.g. 0000:00:03.0) (vfio-ts ${name} --help)`,
        ],
        [[], 2, `vfio-ts ${name}: PCI-ADDRESS is missing (vfio-ts ${name} --help)`],
        [['00:03.0', '--force'], 2, `vfio-ts ${name}: unknown option '--force' (vfio-ts ${name} --help)`],
      ];
      for (const [args, status, line] of cases) {
        const r = await run(f, args, sysfs);
        assert.equal(r.status, status, `${name} ${args.join(' ')}`);
        assert.deepEqual(r.err, [line]);
        assert.deepEqual(r.out, []);
      }
      const help = await run(f, ['--help'], sysfs);
      assert.equal(help.status, 0);
      assert.match(
        help.out.join('\n'),
        new RegExp(`^usage: vfio-ts ${name} PCI-ADDRESS \\[options\\]\\n[^]*\\n {2}--json {2,}\\S`),
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
