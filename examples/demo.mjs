// The main job, end to end on a real image: build a sample OCI image with
// umoci (fixtures/make.sh), load it into a fresh cache, list, inspect, save
// and reload an archive, pin it with a lease, see remove refuse, remove
// it, prune.
//
//   npm run demo            (after `bash scripts/setup.sh`)
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Image, LocalBackend } from "../index.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const fixtures = join(root, "target", "fixtures");
const work = mkdtempSync(join(tmpdir(), "msb-demo-"));
const home = join(work, "home");
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;

try {
  console.log("# building sample images with umoci and skopeo");
  execFileSync("bash", [join(root, "fixtures", "make.sh"), fixtures], { stdio: "inherit" });

  const backend = new LocalBackend({ home });
  console.log(`\n# cache home: ${backend.home}`);

  console.log("\n# load (an OCI layout written by umoci; two images sharing a layer)");
  for (const h of await Image.loadLocal(backend, join(fixtures, "rich"))) console.log(`loaded ${h.reference}`);
  for (const h of await Image.loadLocal(backend, join(fixtures, "pair"))) console.log(`loaded ${h.reference}`);

  console.log("\n# list");
  console.log(["REFERENCE", "DIGEST", "PLATFORM", "LAYERS", "SIZE"].join("\t"));
  for (const h of await Image.listLocal(backend)) {
    console.log([h.reference, h.manifestDigest.slice(7, 19), `${h.os}/${h.architecture}`, h.layerCount, kib(h.sizeBytes)].join("\t"));
  }

  console.log("\n# inspect rich");
  const d = await Image.inspectLocal(backend, "docker.io/library/rich:latest");
  const c = d.config;
  console.log({ entrypoint: c.entrypoint, cmd: c.cmd, env: c.env, workingDir: c.workingDir, user: c.user, labels: c.labels, stopSignal: c.stopSignal });
  for (const l of d.layers) console.log(`layer ${l.position}: ${l.blobDigest.slice(0, 19)} ${l.compressedSizeBytes} B ${l.mediaType}`);

  console.log("\n# save rich and app as one OCI archive, load it into a second cache");
  const archive = join(work, "images.tar"); // outside the cache home
  await Image.saveLocal(backend, ["rich", "app"], archive);
  const second = new LocalBackend({ home: join(work, "second") });
  for (const h of await Image.loadLocal(second, archive)) console.log(`second cache: ${h.reference} ${h.manifestDigest.slice(0, 19)}`);

  console.log("\n# a sandbox pins 'app' with a lease");
  const lease = await Image.acquireLocal(backend, "app", { kind: "sandbox", id: "sandbox-42" });
  console.log(`lease ${lease.id} pins ${lease.manifestDigest.slice(0, 19)}`);
  try {
    await Image.removeLocal(backend, "app");
  } catch (e) {
    console.log(`remove app -> ${e.code}: ${e.message}`);
  }

  console.log("\n# disk usage: each blob once; what each image alone would free");
  const du = await Image.diskUsageLocal(backend);
  console.log(`blobs ${kib(du.blobsBytes)}, reclaimable ${kib(du.reclaimableBytes)}`);
  for (const i of du.images) console.log(`${i.reference}\tsize ${kib(i.sizeBytes)}\tshared ${kib(i.sharedBytes)}\tunique ${kib(i.uniqueBytes)}\t${i.inUse ? "in use" : ""}`);

  console.log("\n# remove rich; a dry run shows what prune would take; then prune (app stays: it is leased)");
  await Image.removeLocal(backend, "rich");
  const dry = await Image.pruneLocal(backend, { dryRun: true });
  console.log(`dry run: ${dry.removed.map((r) => r.reference).join(", ")}; ${kib(dry.bytesReclaimed)}`);
  let report = await Image.pruneLocal(backend);
  console.log(report);
  console.log("left:", (await Image.listLocal(backend)).map((h) => h.reference).join(", "));

  console.log("\n# the sandbox ends; prune takes the rest");
  await lease.release();
  report = await Image.pruneLocal(backend);
  console.log(report);
  console.log("left:", (await Image.listLocal(backend)).length, "images");

  console.log("\n# verify: every blob re-hashed, every invariant checked");
  const v = await Image.verifyLocal(second);
  console.log(`second cache: ${v.blobsChecked} blobs checked, ${v.clean ? "clean" : "PROBLEMS"}`);
  if (!v.clean) process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
