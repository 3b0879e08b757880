#!/usr/bin/env node
// hcl2json.js FILE — print a Nomad job file (HCL2) as JSON, using the real
// HCL parser from the pinned npm package @cdktf/hcl2json (Go's hashicorp/hcl
// compiled to WebAssembly). Exits 1 with the parser's message on a syntax error.
'use strict';
const fs = require('fs');
const path = require('path');
const { parse } = require(path.join(__dirname, '..', 'node_modules', '@cdktf', 'hcl2json'));

async function main() {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: hcl2json.js FILE\n');
    process.exit(2);
  }
  const json = await parse(path.basename(file), fs.readFileSync(file, 'utf8'));
  process.stdout.write(JSON.stringify(json) + '\n');
}

main().catch((e) => {
  process.stderr.write(`hcl2json: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
