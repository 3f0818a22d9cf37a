// The code of microsandbox's TypeScript SDK page for images
// (../shared/seeds/microsandbox-ts-image-api.txt), block by block and
// verbatim, each in an async function: type-checked by tsc against
// index.d.ts, then run by __test__/typed-run.test.mjs on a cache holding
// python:3.12 and old:tag. `console` comes from lib "dom" only for its type.
import { Image, ImageHandle } from "microsandbox";
import type { ImageDetail, ImagePruneReport } from "microsandbox";

async function typicalFlow(): Promise<void> {
  for (const image of await Image.list()) {
    console.log(image.reference, image.layerCount);
  }

  const detail = await Image.inspect("python:3.12");
  console.log(detail.config?.workingDir);

  const report = await Image.prune();
  console.log(report.bytesReclaimed);
}

async function get(): Promise<void> {
  const image = await Image.get("python:3.12");
  console.log(image.manifestDigest);
}

async function list(): Promise<void> {
  const images = await Image.list();
  console.log(images.map((image) => image.reference));
}

async function inspect(): Promise<void> {
  const detail = await Image.inspect("python:3.12");
  for (const layer of detail.layers) {
    console.log(layer.position, layer.diffId);
  }
}

async function remove(): Promise<void> {
  await Image.remove("old:tag", { force: false });
}

async function prune(): Promise<void> {
  const report = await Image.prune();
  console.log(report.imageRefsRemoved, report.bytesReclaimed);
}

// The page's types, as a caller names them.
function shapes(h: ImageHandle, d: ImageDetail, r: ImagePruneReport): unknown[] {
  return [h.sizeBytes, d.config?.labels, r.bytesReclaimed];
}

const blocks: Record<string, () => Promise<void>> = { typicalFlow, get, list, inspect, remove, prune };
const which = process.argv[2];
const block = blocks[which];
if (!block) throw new Error(`no block ${which}`);
block().then(
  () => console.log(JSON.stringify({ ok: which, shapes: shapes.length })),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);

declare const process: { argv: string[]; exit(code: number): never };
