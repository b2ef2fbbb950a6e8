/**
 * DmaSpace's map/lookup/unmap data structure at many regions (a client may map up to
 * max_dma_maps = 65535). Maps N 4 KiB regions (every other page, shuffled order), then times
 * lookups (a 4-byte device DMA read into a random region) and unmapping all one by one, with
 * the regions mapped in ascending IOVA order (as a VM's memory map comes) and shuffled.
 * Run: `node dist/bench/dma-maps.js [N...]` (default 4096 16384 65535).
 */
import { DmaSpace } from '../src/core/dma.js';
import { isMain } from './lib.js';

function shuffled(n: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  let x = 12345;
  for (let i = n - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const j = x % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export async function runDmaMapsBench(sizes: number[]): Promise<void> {
  console.log('order     N        map all (ms)   lookup (us/op)   unmap all (ms)');
  for (const [name, n] of sizes.flatMap((n) => [['ascending', n] as const, ['shuffled', n] as const])) {
    const d = new DmaSpace(n);
    const bytes = new Uint8Array(4096);
    const order = name === 'shuffled' ? shuffled(n) : Array.from({ length: n }, (_, i) => i);
    let t = performance.now();
    for (const i of order) d.map(BigInt(i) * 8192n, 4096n, { bytes, readable: true, writable: true });
    const mapMs = performance.now() - t;
    const lookups = 20000;
    t = performance.now();
    for (let k = 0; k < lookups; k++) await d.read(BigInt(order[k % n]!) * 8192n + 16n, 4);
    const lookupUs = ((performance.now() - t) * 1000) / lookups;
    t = performance.now();
    for (const i of order) d.unmap(BigInt(i) * 8192n, 4096n);
    const unmapMs = performance.now() - t;
    console.log(
      `${name.padEnd(10)}${String(n).padEnd(9)}${mapMs.toFixed(1).padStart(12)}   ${lookupUs.toFixed(2).padStart(14)}   ${unmapMs.toFixed(1).padStart(14)}`,
    );
  }
}

if (isMain(import.meta.url)) {
  // Numbers only: `npm run bench -- --peer PATH` hands every section the same arguments.
  const args = process.argv
    .slice(2)
    .filter((a) => /^\d+$/.test(a))
    .map(Number);
  await runDmaMapsBench(args.length > 0 ? args : [4096, 16384, 65535]);
}
