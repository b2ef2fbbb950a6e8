/**
 * The package as a user gets it: `npm pack`, the tarball installed into an empty project, and a
 * consumer that imports only public paths (the root and every subpath of `exports`), type-checked
 * with the strictest settings this project uses and the package's own declarations checked too
 * (skipLibCheck off), then run: it defines a device, serves it, connects a client and reads a
 * register. The example devices and the module-shaped code blocks of docs/writing-a-device.md
 * and the README are type-checked the same way, against the installed package. It also mixes paths on purpose (a device built through `vfio-ts/devices` served by
 * the root's server, a client from `vfio-ts/client` under the root's VfioDevice): every path
 * re-exports the same modules, so there is one class identity and no TS2345 "separate
 * declarations of a private property". A deep import is refused by `exports`.
 *
 * Offline: koffi, the one dependency, is installed from this repository's node_modules (a link,
 * same version), so neither the registry nor the npm cache is needed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from './harness/index.js';

const CONSUMER = `
import { strict as assert } from 'node:assert';
import { join } from 'node:path';
import {
  defineDevice,
  type DeviceDefinition,
  Eventfd,
  openKernelDevice,
  serveDevice,
  VfioDevice,
  VfioError,
  VfioUserClient,
  VfioUserServer,
  nativeEnvironment,
} from 'vfio-ts';
import { VFIO_DEVICE_GET_INFO } from 'vfio-ts/abi';
import { VfioUserClient as SubpathClient } from 'vfio-ts/client';
import { VfioPciDevice } from 'vfio-ts/core';
import { eduDevice } from 'vfio-ts/devices';
import { openKernelDevice as subpathOpenKernel } from 'vfio-ts/kernel';
import { serveDevice as subpathServe, VfioUserServer as SubpathServer } from 'vfio-ts/server';
import { struct } from 'vfio-ts/wire';

const counter: DeviceDefinition = defineDevice({
  name: 'counter',
  identity: { vendorId: 0x1b36, deviceId: 0x0042, classCode: 0xff0000 },
  bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'registers' }],
  msix: { vectors: 1, table: { bar: 0, offset: 0x800 }, pba: { bar: 0, offset: 0xc00 } },
  state: () => ({ count: 0n }),
  create: (dev) => ({
    bars: {
      0: {
        read: (offset) => (offset === 0 ? dev.state.count : 0n),
        write: (offset, _size, value) => {
          if (offset === 0) dev.state.count += value;
        },
      },
    },
  }),
});

const dir = process.argv[2]!;
const served = await serveDevice(counter, { socket: join(dir, 'counter.sock'), signals: false });
const client: VfioUserClient = await SubpathClient.connect(served.socket);
const dev = new VfioDevice(client);
await dev.write32(0, 0, 40);
await dev.write32(0, 0, 2);
const value = await dev.read32(0, 0);
await dev.close();
await served.server.idle();
await served.stop();

// A device built through the devices subpath, served by the root's server class.
const edu: VfioPciDevice = eduDevice().instantiate({ env: nativeEnvironment() }).device;
const server: VfioUserServer = new SubpathServer(edu);
server.stop();
edu.close();

const efd = new Eventfd();
efd.close();
let deep = '';
try {
  await import('vfio-ts/dist/src/core/device.js' as string);
} catch (e) {
  deep = (e as { code?: string }).code ?? String(e);
}
console.log(
  JSON.stringify({
    value,
    sameServer: SubpathServer === VfioUserServer,
    sameClient: SubpathClient === VfioUserClient,
    sameServe: subpathServe === serveDevice,
    sameKernel: subpathOpenKernel === openKernelDevice,
    errorClass: typeof VfioError,
    getInfo: VFIO_DEVICE_GET_INFO,
    struct: typeof struct,
    deep,
  }),
);
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    lib: ['ES2022'],
    strict: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    verbatimModuleSyntax: true,
    skipLibCheck: false,
    outDir: 'out',
  },
};

/** The code blocks of a document that are whole modules (they start with an import). */
function moduleBlocks(root: string, doc: string): string[] {
  const guide = readFileSync(join(root, doc), 'utf8');
  return [...guide.matchAll(/```ts\n([\s\S]*?)```/g)]
    .map((m) => m[1]!)
    .filter((b) => b.startsWith('import '));
}

function run(cmd: string, args: string[], cwd: string, timeout = 120_000) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('npm pack → install into a new project → a strict consumer of the public paths type-checks and runs', () => {
  const root = repoRoot();
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-package-'));
  try {
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const packed = JSON.parse(
      run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], root),
    ) as {
      filename: string;
      files: { path: string }[];
    }[];
    const files = packed[0]!.files.map((f) => f.path);
    assert.ok(
      files.includes('dist/src/index.d.ts') && files.includes('dist/src/cli/main.js'),
      files.join('\n'),
    );
    assert.ok(
      !files.some((f) => f.startsWith('dist/test/') || f.startsWith('src/')),
      'only the built library',
    );
    writeFileSync(
      join(dir, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
    );
    run(
      npm,
      [
        'install',
        '--offline',
        '--ignore-scripts',
        '--no-audit',
        '--no-fund',
        join(dir, packed[0]!.filename),
        join(root, 'node_modules/koffi'),
      ],
      dir,
    );
    assert.equal(
      JSON.parse(readFileSync(join(dir, 'node_modules/vfio-ts/package.json'), 'utf8')).name,
      'vfio-ts',
    );
    // The consumer, the example devices and the guide's modules, all against the installed package.
    writeFileSync(join(dir, 'consumer.ts'), CONSUMER);
    const sources = ['consumer.ts'];
    for (const example of ['doorbell.ts', 'dma-copy.ts']) {
      writeFileSync(join(dir, example), readFileSync(join(root, 'examples', example)));
      sources.push(example);
    }
    const blocks = [...moduleBlocks(root, 'docs/writing-a-device.md'), ...moduleBlocks(root, 'README.md')];
    assert.ok(blocks.length >= 5, 'the guide and the README have their module blocks');
    for (const [i, block] of blocks.entries()) {
      writeFileSync(join(dir, `block-${i}.ts`), block);
      sources.push(`block-${i}.ts`);
    }
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        ...TSCONFIG,
        compilerOptions: {
          ...TSCONFIG.compilerOptions,
          typeRoots: [join(root, 'node_modules/@types')],
          types: ['node'],
        },
        files: sources,
      }),
    );
    run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', dir], dir);
    const out = run(process.execPath, [join(dir, 'out/consumer.js'), dir], dir, 30_000);
    assert.deepEqual(JSON.parse(out), {
      value: 42,
      sameServer: true,
      sameClient: true,
      sameServe: true,
      sameKernel: true,
      errorClass: 'function',
      getInfo: 0x3b6b,
      struct: 'function',
      deep: 'ERR_PACKAGE_PATH_NOT_EXPORTED',
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
