/**
 * readOutputDisk without QEMU: the layout scripts/guest/init.sh writes (the output at
 * OUTPUT_DISK_BODY_OFFSET, then the header at 0), and what is not a finished write.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { OUTPUT_DISK_BODY_OFFSET, readOutputDisk } from './qemu.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-outdisk-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function image(name: string, header: string | undefined, body: string): string {
  const path = join(dir, name);
  const b = Buffer.alloc(OUTPUT_DISK_BODY_OFFSET + Buffer.byteLength(body));
  if (header !== undefined) b.write(header, 0, 'latin1');
  b.write(body, OUTPUT_DISK_BODY_OFFSET, 'utf8');
  writeFileSync(path, b);
  truncateSync(path, 1 << 20);
  return path;
}

test('the output and status of the boot whose nonce the header names', () => {
  const body = 'line 1\r\nline 2 é\n';
  const path = image('ok.img', `VFIOTS-GUEST 0a1b 7 ${Buffer.byteLength(body)}\n`, body);
  assert.deepEqual(readOutputDisk(path, '0a1b'), { output: 'line 1\nline 2 é\n', status: 7 });
});

test('no header (the guest stopped before it), another nonce, or a length past the disk: undefined', () => {
  assert.equal(readOutputDisk(image('none.img', undefined, 'half written'), '0a1b'), undefined);
  assert.equal(readOutputDisk(image('other.img', 'VFIOTS-GUEST ffff 0 4\n', 'abcd'), '0a1b'), undefined);
  assert.equal(readOutputDisk(image('huge.img', `VFIOTS-GUEST 0a1b 0 ${2 ** 40}\n`, ''), '0a1b'), undefined);
});
