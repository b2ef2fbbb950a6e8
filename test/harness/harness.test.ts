/**
 * Smoke tests of the QEMU harness itself: both Debian guest kernels boot with edu and
 * ivshmem-plain and bind edu to the real vfio-pci, and so do the two kernels provision.sh builds
 * with iommufd (their device nodes checked: /dev/iommu and the cdev, the group's only where the
 * kernel has groups); Node.js (and koffi from the project tree) runs in a guest; the qtest
 * plumbing reads the q35 host bridge through 0xcf8/0xcfc in the chroot's QEMU 11.
 * Needs `scripts/provision.sh` (skips loudly without it, fails under CI=true).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { projectTrees } from './initramfs.js';
import { BUILT_KERNEL_LABELS, KERNEL_LABELS, kernelOf, provisionedOrSkip } from './provisioned.js';
import { chrootWorkDir, describeBoot, edu, ivshmemPlain, runGuest, sharedMemory } from './qemu.js';
import { QtestError, withQtest } from './qtest.js';

const BIND_EDU = `
edu=$(pci_find 0x1234 0x11e8) || { echo "no edu device"; exit 10; }
group=$(vfio_bind "$edu") || { echo "vfio_bind $edu failed"; exit 11; }
echo "edu=$edu group=$group driver=$(basename "$(readlink /sys/bus/pci/devices/$edu/driver)")"
[ -c /dev/vfio/vfio ] || { echo "no /dev/vfio/vfio"; exit 12; }
[ -c "/dev/vfio/$group" ] || { echo "no /dev/vfio/$group"; ls -l /dev/vfio; exit 13; }
ivshmem=$(pci_find 0x1af4 0x1110) || { echo "no ivshmem device"; exit 14; }
echo "ivshmem=$ivshmem resources=$(ls /sys/bus/pci/devices/$ivshmem | grep -c '^resource')"
echo "uname=$(uname -r)"
`;

/** For the kernels built with iommufd: bind edu, then its cdev under vfio-dev and /dev/vfio/devices. */
const BIND_CDEV = `
edu=$(pci_find 0x1234 0x11e8) || { echo "no edu device"; exit 10; }
group=$(vfio_bind "$edu") || { echo "vfio_bind $edu failed"; exit 11; }
cdev=$(ls /sys/bus/pci/devices/$edu/vfio-dev)
echo "cdev=$cdev node=$([ -c /dev/vfio/devices/$cdev ] && echo yes || echo no) iommu=$([ -c /dev/iommu ] && echo yes || echo no)"
`;

describe('QEMU guest harness', () => {
  for (const label of KERNEL_LABELS) {
    it(`boots Linux ${label} and binds edu to vfio-pci`, async (t) => {
      const p = provisionedOrSkip(t);
      if (p === undefined) return;
      const kernel = p.kernels[label];
      const r = await runGuest(p, {
        kernel,
        script: BIND_EDU,
        args: [...edu(), ...ivshmemPlain()],
        timeoutMs: 120_000,
      });
      t.diagnostic(`Linux ${kernel.release}: ${r.durationMs} ms`);
      assert.equal(r.status, 0, describeBoot(r));
      assert.match(r.output, /^edu=0000:00:[0-9a-f]{2}\.0 group=\d+ driver=vfio-pci$/m, describeBoot(r));
      assert.match(r.output, /^ivshmem=0000:00:[0-9a-f]{2}\.0 /m, describeBoot(r));
      assert.match(r.output, new RegExp(`^uname=${kernel.release.replace(/[.+]/g, '\\$&')}$`, 'm'));
      assert.equal(r.timedOut, false);
    });
  }

  for (const label of BUILT_KERNEL_LABELS) {
    it(`boots Linux ${label} (built with iommufd) and binds edu: /dev/iommu and the device cdev${label === '7.3-cdev' ? ', no group' : ''}`, async (t) => {
      const p = provisionedOrSkip(t, { built: true });
      if (p === undefined) return;
      const kernel = kernelOf(p, label);
      const r = await runGuest(p, {
        kernel,
        script: `${BIND_CDEV}
echo "group-node=$([ -c /dev/vfio/$group ] && echo yes || echo no) container=$([ -c /dev/vfio/vfio ] && echo yes || echo no)"`,
        args: [...edu(), ...ivshmemPlain()],
        timeoutMs: 120_000,
      });
      t.diagnostic(`Linux ${label} ${kernel.release}: ${r.durationMs} ms`);
      assert.equal(r.status, 0, describeBoot(r));
      assert.match(r.output, /^cdev=vfio\d+ node=yes iommu=yes$/m, describeBoot(r));
      const groups = label === '7.3-cdev' ? 'no' : 'yes';
      assert.match(r.output, new RegExp(`^group-node=${groups} container=${groups}$`, 'm'), describeBoot(r));
    });
  }

  it('boots Linux 7.3 under the chroot QEMU 11 with memfd-backed RAM', async (t) => {
    const p = provisionedOrSkip(t, { chroot: true });
    if (p === undefined) return;
    const work = chrootWorkDir(p);
    try {
      const r = await runGuest(p, {
        kernel: p.kernels['7.3'],
        script: BIND_EDU,
        args: [...edu(), ...ivshmemPlain(), ...sharedMemory()],
        qemu: 'trixie',
        workDir: work,
        timeoutMs: 120_000,
      });
      t.diagnostic(`QEMU 11, Linux ${p.kernels['7.3'].release}: ${r.durationMs} ms`);
      assert.equal(r.status, 0, describeBoot(r));
      assert.match(r.argv.join(' '), /^chroot \S+\/trixie \/usr\/bin\/qemu-system-x86_64 /);
      assert.match(r.output, /^edu=0000:00:[0-9a-f]{2}\.0 group=\d+ driver=vfio-pci$/m, describeBoot(r));
    } finally {
      work.cleanup();
    }
  });

  it('runs Node.js and koffi inside a guest', async (t) => {
    const p = provisionedOrSkip(t);
    if (p === undefined) return;
    const r = await runGuest(p, {
      kernel: p.kernels['6.1'],
      modules: [],
      node: true,
      trees: projectTrees(),
      script: [
        'node -e "console.log(process.version)" || exit 20',
        'cd /app || exit 21',
        `node --input-type=module -e "import koffi from 'koffi'; console.log('koffi', typeof koffi.load)" || exit 22`,
      ].join('\n'),
      timeoutMs: 120_000,
    });
    t.diagnostic(`boot with Node: ${r.durationMs} ms`);
    assert.equal(r.status, 0, describeBoot(r));
    assert.match(r.output, new RegExp(`^${process.version.replace(/\./g, '\\.')}$`, 'm'), describeBoot(r));
    assert.match(r.output, /^koffi function$/m, describeBoot(r));
  });

  it('reports a failing guest script and its status', async (t) => {
    const p = provisionedOrSkip(t);
    if (p === undefined) return;
    const r = await runGuest(p, {
      kernel: p.kernels['6.1'],
      modules: [],
      script: 'echo about to fail\nexit 7',
    });
    assert.equal(r.status, 7, describeBoot(r));
    assert.match(r.output, /^about to fail$/m);
  });

  it('reads output and status from the output disk, byte for byte', async (t) => {
    const p = provisionedOrSkip(t);
    if (p === undefined) return;
    // 20,000 numbered lines (~130 KB): more than the console reliably carries on a loaded host.
    const r = await runGuest(p, {
      kernel: p.kernels['6.1'],
      modules: [],
      outputDisk: true,
      script: 'seq 1 20000 | sed "s/^/line /"\necho to-stderr >&2\nexit 3',
      timeoutMs: 120_000,
    });
    assert.equal(r.outputFrom, 'disk', describeBoot(r));
    assert.equal(r.status, 3, describeBoot(r));
    const want = `${Array.from({ length: 20000 }, (_, i) => `line ${i + 1}\n`).join('')}to-stderr\n`;
    assert.equal(r.output, want);
  });

  it('kills QEMU on timeout', async (t) => {
    const p = provisionedOrSkip(t);
    if (p === undefined) return;
    const r = await runGuest(p, {
      kernel: p.kernels['6.1'],
      modules: [],
      script: 'sleep 600',
      timeoutMs: 4_000,
    });
    assert.equal(r.timedOut, true);
    assert.equal(r.status, undefined);
    assert.equal(r.signal, 'SIGKILL');
  });

  it('reads the q35 host bridge through qtest in QEMU 11', async (t) => {
    const p = provisionedOrSkip(t, { chroot: true });
    if (p === undefined) return;
    await withQtest(p, {}, async (q) => {
      const id = await q.pciConfigRead32(0, 0, 0, 0);
      assert.equal(id & 0xffff, 0x8086, `vendor/device 0x${id.toString(16)}`);
      assert.equal(id >>> 16, 0x29c0); // q35 MCH (hw/pci-host/q35.c)
      // No device at 00:1e.0: config reads float to all ones.
      assert.equal(await q.pciConfigRead32(0, 0x1e, 0, 0), 0xffff_ffff);
      await assert.rejects(q.command('no-such-command'), QtestError);
      // The session still works after a FAIL.
      assert.equal((await q.pciConfigRead32(0, 0, 0, 0)) & 0xffff, 0x8086);
    });
  });
});
