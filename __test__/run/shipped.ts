// Code written against microsandbox's own npm package (0.6.18:
// dist/image.d.ts, pull-policy.d.ts, pull-progress.d.ts) keeps working
// here: Image.load(path, { tag }), Image.save(refs, { outputPath, format })
// with "docker" the default, the pull policy "if-missing", and PullProgress
// events beside our ProgressEvent (the download kinds, and the package's
// layerMaterialize* and stitch* kinds, which a pull with materialize emits). Type-checked by tsc, then run by
// __test__/typed-run.test.mjs with the ambient home set and a registry
// holding REGISTRY/team/rich:1.
import { Image } from "microsandbox";
import type { ImageHandle, PullProgress } from "microsandbox";

declare const process: { argv: string[]; exit(code: number): never };

type PullPolicy = "always" | "if-missing" | "never";

function describe(e: PullProgress): string {
  switch (e.kind) {
    case "resolving":
      return `resolving ${e.reference}`;
    case "resolved":
      return `resolved ${e.manifestDigest} ${e.layerCount} ${e.totalDownloadBytes ?? "?"}`;
    case "layerDownloadProgress":
      return `layer ${e.layerIndex} ${e.downloadedBytes}/${e.totalBytes ?? "?"}`;
    case "layerDownloadComplete":
      return `layer ${e.layerIndex} done ${e.downloadedBytes}`;
    case "layerDownloadVerifying":
      return `layer ${e.layerIndex} verifying ${e.digest}`;
    case "layerMaterializeStarted":
      return `layer ${e.layerIndex} materializing ${e.diffId}`;
    case "layerMaterializeProgress":
      return `layer ${e.layerIndex} materialized ${e.bytesRead}/${e.totalBytes ?? "?"}`;
    case "layerMaterializeWriting":
      return `layer ${e.layerIndex} writing`;
    case "layerMaterializeComplete":
      return `layer ${e.layerIndex} image ${e.erofsSizeBytes}`;
    case "stitchMergingTrees":
      return `merging ${e.layerCount}`;
    case "stitchWritingFsmeta":
      return "writing fsmeta";
    case "stitchWritingVmdk":
      return "writing vmdk";
    case "stitchComplete":
      return `disk ${e.vmdkPath}`;
    case "complete":
      return `complete ${e.reference} ${e.layerCount}`;
  }
}

async function main(fixture: string, out: string, registry: string): Promise<void> {
  const loaded: ImageHandle[] = await Image.load(fixture, { tag: "shipped:1" });
  const saved = `${out}/shipped.tar`;
  await Image.save(loaded.map((h) => h.reference), { outputPath: saved });
  await Image.save("shipped:1", { outputPath: `${out}/shipped-oci.tar`, format: "oci" });
  const events: string[] = [];
  const policy: PullPolicy = "if-missing";
  const pulled = await Image.pull(`${registry}/team/rich:1`, {
    policy,
    onPullProgress: (e) => events.push(describe(e)),
  });
  const again = await Image.pull(`${registry}/team/rich:1`, { policy });
  // Events are handed over without blocking the pull: the last may land
  // just after it settles.
  await new Promise((resolve) => setTimeout(resolve, 100));
  console.log(
    JSON.stringify({
      loaded: loaded.map((h) => h.reference),
      pulled: pulled.manifestDigest,
      again: again.manifestDigest,
      events,
    }),
  );
}

const [fixture, out, registry] = process.argv.slice(2);
main(fixture, out, registry).catch((e) => {
  console.error(e);
  process.exit(1);
});
