#!/usr/bin/env node
'use strict';
// The `microsandbox` command: `npx microsandbox image ls|inspect|rm|prune|
// df|pull|load|save|leases`, on the addon. Exit codes: 0 success, 1 a
// failed operation (`error: Code: message` on stderr), 2 a usage error
// (printed with the command's help).

const { parseArgs } = require('node:util');
const { COMMANDS, COMMON, UsageError, reportError } = require('./cli/commands');

const NAME = 'microsandbox';

function topHelp() {
  const lines = [
    `Usage: ${NAME} image COMMAND [OPTIONS]`,
    '',
    'Manage the local OCI image cache ($MSB_HOME, else ~/.microsandbox).',
    '',
    'Commands:',
  ];
  for (const [name, c] of Object.entries(COMMANDS)) {
    if (name === 'list' || name === 'remove') continue;
    lines.push(`  ${name.padEnd(8)} ${c.about.split('\n')[0]}`);
  }
  lines.push('', 'Every command takes --home DIR, --json and --help.', `Run '${NAME} image COMMAND --help' for more.`);
  return lines.join('\n');
}

function commandHelp(c) {
  return `Usage: ${NAME} ${c.usage}\n\n${c.about}\n\nCommon options:\n  --home DIR   the cache home (else $MSB_HOME, else ~/.microsandbox)\n  --json       machine-readable output\n  -h, --help   this help`;
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
  let parsed;
  try {
    parsed = parseArgs({ args: argv.slice(2), options: { ...COMMON, ...command.options }, allowPositionals: true, strict: true });
  } catch (e) {
    process.stderr.write(`error: ${e.message}\n\n${commandHelp(command)}\n`);
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
    reportError(e);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    reportError(e);
    process.exitCode = 1;
  },
);
