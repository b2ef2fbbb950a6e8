/**
 * The differential without QEMU: the model against the transcripts Linux 6.1 and 7.3 gave in the
 * guests (test/kernel/recorded/, refreshed by VFIO_TS_RECORD=1 with the differential test). Same
 * comparison, same rule for `info` cases, no differences allowed. Runs everywhere, in about a
 * second; the live differential.test.ts keeps the recording honest.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KERNEL_LABELS } from '../harness/index.js';
import { MODELLED, modelDevice, modelTarget } from './model.js';
import { compareTranscripts, type ProbeCase, runProbe } from './probe-sequence.js';
import { readRecorded, recordedCases } from './recorded.js';

describe('the model against recorded vfio-pci transcripts', () => {
  for (const label of KERNEL_LABELS) {
    const rec = readRecorded(label);
    for (const name of MODELLED) {
      test(`Linux ${rec.release}: ${name}`, async () => {
        const kernel = recordedCases(rec, name);
        assert.ok(kernel.length >= 400, `${kernel.length} recorded cases`);
        const dev = modelDevice(name, label);
        let model: ProbeCase[];
        try {
          model = await runProbe(modelTarget(dev));
        } finally {
          dev.close();
        }
        const diffs = compareTranscripts(kernel, model).filter((d) => !d.info);
        assert.deepEqual(
          diffs.map((d) => `${d.name}: kernel ${d.kernel} / model ${d.model}`),
          [],
        );
      });
    }
  }
});
