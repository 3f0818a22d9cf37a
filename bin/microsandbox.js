#!/usr/bin/env node
'use strict';
// The `microsandbox` command: `npx microsandbox image ls|inspect|rm|prune|
// df|pull|push|load|save|verify|leases`, and `microsandbox serve`, on the addon. Exit codes: 0 success, 1 a
// failed operation (`error: Code: message` on stderr), 2 a usage error
// (printed with the command's help). A reader that goes away (`... | head
// -1`) ends the command quietly, as git and docker do; no stack trace ever
// reaches a user.

const { parseArgs } = require('node:util');
const { COMMANDS, COMMON, UsageError, reportError } = require('./cli/commands');

const NAME = 'microsandbox';

// --- streams and the unexpected ------------------------------------------
// Once stdout's reader has gone, what is left to print goes nowhere: the
// command runs to its end (its temporaries are removed) and exits with its
// own code, not with an EPIPE.
let stdoutClosed = false;

/** Whether `e` is stdout (or stderr) having lost its reader. */
function isClosedPipe(e) {
  if (!e) return false;
  if (e.code === 'EPIPE') return true;
  return stdoutClosed && (e.code === 'ERR_STREAM_DESTROYED' || e.code === 'ERR_STREAM_PREMATURE_CLOSE');
}

/** The last word on an exception nothing caught: `error: message`, exit 1. */
function fatal(e) {
  if (isClosedPipe(e)) {
    stdoutClosed = true;
    return;
  }
  try {
    reportError(e);
  } catch {
    // stderr is gone too: nothing left to tell.
  }
  process.exit(1);
}

process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') stdoutClosed = true;
  else fatal(e);
});
process.stderr.on('error', () => {
  // Nowhere to report a failing stderr; the exit code still tells.
});
process.on('uncaughtException', fatal);
process.on('unhandledRejection', fatal);

function topHelp() {
  const lines = [
    `Usage: ${NAME} image COMMAND [OPTIONS]`,
    `       ${NAME} serve [OPTIONS]    (the cache over HTTP; ${NAME} serve --help)`,
    '',
    'Manage the local OCI image cache ($MSB_HOME, else ~/.microsandbox).',
    '',
    'Commands:',
  ];
  for (const [name, c] of Object.entries(COMMANDS)) {
    if (name === 'list' || name === 'remove') continue;
    lines.push(`  ${name.padEnd(8)} ${c.summary}`);
  }
  lines.push('', 'Every command takes --home DIR, --json and --help.', `Run '${NAME} image COMMAND --help' for more.`);
  return lines.join('\n');
}

function commandHelp(c) {
  const about = c.about ? `\n\n${c.about}` : '';
  return `Usage: ${NAME} ${c.usage}\n\n${c.summary}${about}\n\nCommon options:\n  --home DIR   the cache home (else $MSB_HOME, else ~/.microsandbox)\n  --json       machine-readable output\n  -h, --help   this help`;
}

/** `-o` -> `--output`: an option as its long name, which the help lists. */
function longName(token, options) {
  if (token.startsWith('--')) return token;
  const short = token.slice(1);
  const name = Object.keys(options).find((k) => options[k].short === short);
  return name ? `--${name}` : token;
}

/**
 * A parseArgs error in our own words (`unknown option --x`, `--home needs
 * a value`): its messages, with their advice and unbalanced quotes, are
 * not for users.
 */
function usageMessage(e, options) {
  const quoted = /'([^']*)'/.exec(e.message)?.[1] ?? '';
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${quoted}`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument ${quoted}`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      // `-o, --output <value>`, `--json`, `-o`: the long name if given.
      const name = longName(/--[\w-]+/.exec(quoted)?.[0] ?? quoted.split(/[ ,]/)[0], options);
      if (/does not take an argument/.test(e.message)) return `${name} takes no value`;
      if (/ambiguous/.test(e.message)) return `${name} needs a value (write ${name}=VALUE for one that starts with -)`;
      return `${name} needs a value`;
    }
    default:
      return 'invalid arguments';
  }
}

function backendFor(home) {
  const { LocalBackend } = require('../index.js');
  return new LocalBackend(home ? { home } : {});
}

async function main(argv) {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h') {
    process.stdout.write(`${topHelp()}\n`);
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === 'serve') return require('./cli/serve').main(argv.slice(1));
  if (argv[0] !== 'image') {
    process.stderr.write(`error: unknown command ${argv[0]}\n\n${topHelp()}\n`);
    return 2;
  }
  const name = argv[1];
  const command = name && COMMANDS[name];
  if (!command) {
    if (name === '--help' || name === '-h') {
      process.stdout.write(`${topHelp()}\n`);
      return 0;
    }
    process.stderr.write(`error: ${name ? `unknown image command ${name}` : 'missing image command'}\n\n${topHelp()}\n`);
    return 2;
  }
  const options = { ...COMMON, ...command.options };
  let parsed;
  try {
    parsed = parseArgs({ args: argv.slice(2), options, allowPositionals: true, strict: true });
  } catch (e) {
    if (typeof e.code !== 'string' || !e.code.startsWith('ERR_PARSE_ARGS_')) throw e;
    process.stderr.write(`error: ${usageMessage(e, options)}\n\n${commandHelp(command)}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(`${commandHelp(command)}\n`);
    return 0;
  }
  try {
    const backend = backendFor(parsed.values.home);
    return await command.run({ backend, values: parsed.values, positionals: parsed.positionals });
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`error: ${e.message}\n\n${commandHelp(command)}\n`);
      return 2;
    }
    if (isClosedPipe(e)) return 0;
    reportError(e);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
}, fatal);
