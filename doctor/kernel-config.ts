// The running kernel's build options, from /proc/config.gz or
// /boot/config-<release> when either exists: what a probe cannot tell (EROFS
// over fscache needs a mount served by a daemon) it can.
import fs from 'node:fs';
import os from 'node:os';
import zlib from 'node:zlib';

/** CONFIG_X → "y", "m" or a value; options "is not set" are absent. */
export type KernelConfig = Map<string, string>;

export function parseKernelConfig(text: string): KernelConfig {
  const out: KernelConfig = new Map();
  for (const line of text.split('\n')) {
    const m = /^(CONFIG_[A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out.set(m[1], m[2]);
  }
  return out;
}

/** null when neither file is there. */
export function readKernelConfig(): { config: KernelConfig; from: string } | null {
  try {
    return { config: parseKernelConfig(zlib.gunzipSync(fs.readFileSync('/proc/config.gz')).toString('latin1')), from: '/proc/config.gz' };
  } catch {
    // not built with IKCONFIG_PROC
  }
  const boot = `/boot/config-${os.release()}`;
  try {
    return { config: parseKernelConfig(fs.readFileSync(boot, 'latin1')), from: boot };
  } catch {
    return null;
  }
}

/** "built in", "module", or "not set". */
export function optionState(c: KernelConfig, name: string): 'built in' | 'module' | 'not set' {
  const v = c.get(name);
  return v === 'y' ? 'built in' : v === 'm' ? 'module' : 'not set';
}
