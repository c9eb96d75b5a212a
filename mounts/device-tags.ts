// The blobs an image's mount opens: the device tags in its bootstrap's
// device table. Read from the bootstrap's head only, since a plain EROFS
// image can be hundreds of MiB.
import fs from 'node:fs';
import { Bytes } from '../image/bytes';
import { deviceSlots, deviceTableEnd, deviceTags } from '../image/rafs/bootstrap';

export function readDeviceTags(file: string): string[] {
  return deviceTags(readTableHead(file));
}

/** The blobs a file-backed mount opens as devices, with their sizes in bytes. */
export function readDevices(file: string): { tag: string; size: number }[] {
  const { slots, blockSize } = deviceSlots(readTableHead(file));
  return slots.map((d) => ({ tag: d.tag, size: d.blocks * blockSize }));
}

function readTableHead(file: string): Bytes {
  const fd = fs.openSync(file, 'r');
  try {
    const read = (len: number) => {
      const buf = Buffer.alloc(len);
      return new Bytes(buf.subarray(0, fs.readSync(fd, buf, 0, len, 0)), `bootstrap ${file}`);
    };
    const head = read(64 << 10);
    const end = deviceTableEnd(head);
    return end <= head.length ? head : read(end);
  } finally {
    fs.closeSync(fd);
  }
}
