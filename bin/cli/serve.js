'use strict';
// `microsandbox serve`: the cache over HTTP until SIGTERM or SIGINT, when
// the requests in flight finish and the socket goes. The token comes from
// --token-file, else MSB_API_TOKEN, else MINIBOX_API_TOKEN; TCP refuses to
// start without one. One JSON line per request on stderr (none with -q).
// Clients may name host paths to load and save only inside the
// directories given with --allow-path (none by default).

const { parseArgs } = require('node:util');
const { reportError } = require('./commands');

const USAGE = `Usage: microsandbox serve [--listen unix:PATH | HOST:PORT] [--token-file FILE] [--home DIR]
                          [--public-registry] [--max-pulls N] [--max-connections N]
                          [--allow-path DIR]... [-q]

Serve the image cache over HTTP: MiniBox's image endpoints (GET /images, POST /images/pull|save|
load|remove, POST /system/prune), JSON for every Image call under /v1/ (openapi.yaml at
/openapi.yaml), and a read-only OCI registry under /v2/ that other hosts use as a mirror.

Options:
  --listen ADDR        unix:PATH (default: $MSB_HOME/serve.sock, mode 0600) or HOST:PORT (needs a token)
  --token-file FILE    the API token (else MSB_API_TOKEN, else MINIBOX_API_TOKEN)
  --home DIR           the cache home (else $MSB_HOME, else ~/.microsandbox)
  --public-registry    serve /v2/ without the token (the management endpoints never)
  --max-pulls N        pulls at once (4); more are answered 503 Busy
  --max-connections N  connections served at once (1024); more wait, unaccepted, until one ends
  --allow-path DIR     a directory whose files clients may load and save (repeatable); with none,
                       every request naming a host path is refused
  -q, --quiet          no request log on stderr
  -h, --help           this help`;

const OPTIONS = {
  listen: { type: 'string' },
  'token-file': { type: 'string' },
  home: { type: 'string' },
  'public-registry': { type: 'boolean' },
  'max-pulls': { type: 'string' },
  'max-connections': { type: 'string' },
  'allow-path': { type: 'string', multiple: true },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
};

function usage(message) {
  process.stderr.write(`error: ${message}\n\n${USAGE}\n`);
  return 2;
}

/** Runs the server; resolves with the exit code once it has stopped. */
async function main(argv) {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false, strict: true }));
  } catch (e) {
    if (typeof e.code !== 'string' || !e.code.startsWith('ERR_PARSE_ARGS_')) throw e;
    return usage(e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? `unknown option ${/'([^']*)'/.exec(e.message)?.[1] ?? ''}` : 'invalid arguments');
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let pulls;
  if (values['max-pulls'] !== undefined) {
    pulls = Number(values['max-pulls']);
    if (!Number.isInteger(pulls) || pulls < 1) return usage(`--max-pulls needs a whole number of 1 or more, got ${values['max-pulls']}`);
  }
  let connections;
  if (values['max-connections'] !== undefined) {
    connections = Number(values['max-connections']);
    if (!Number.isInteger(connections) || connections < 1) {
      return usage(`--max-connections needs a whole number of 1 or more, got ${values['max-connections']}`);
    }
  }
  const { serve } = require('../../index.js');
  let server;
  try {
    server = await serve({
      listen: values.listen,
      tokenFile: values['token-file'],
      home: values.home,
      publicRegistry: values['public-registry'] ?? false,
      maxConcurrentPulls: pulls,
      maxConnections: connections,
      allowPaths: values['allow-path'] ?? [],
      log: !values.quiet,
    });
  } catch (e) {
    reportError(e);
    return 1;
  }
  process.stderr.write(`microsandbox serve: listening on ${server.address}\n`);
  // The server's threads do not hold Node's event loop open: this does.
  const keepAlive = setInterval(() => {}, 1 << 30);
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (signal) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`microsandbox serve: ${signal}: finishing the requests in flight\n`);
      server.close().then(
        () => {
          clearInterval(keepAlive);
          resolve(0);
        },
        (e) => {
          clearInterval(keepAlive);
          reportError(e);
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

module.exports = { main, USAGE };
