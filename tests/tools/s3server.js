#!/usr/bin/env node
/*
 * s3server.js — starts @20minutes/s3rver 4.0.4 (tests/node_modules) as the
 * S3 server of the tests: 127.0.0.1 only, its own data directory, one access
 * key whose SigV4 signatures it VERIFIES (s3rver checks every signed request
 * against models/account.js's key registry; the built-in S3RVER/S3RVER key is
 * revoked so only ours works).
 *
 *   node --openssl-legacy-provider s3server.js --dir DIR --access-key K --secret-key S
 *                    [--port N (0 = any free)] [--bucket NAME]...
 *                    [--tls-key FILE --tls-cert FILE]  (serve HTTPS)
 *                    [--no-fix-list] [--no-fix-delete] [--no-fix-escape]
 *
 * When listening it prints one line on stdout and keeps running until
 * SIGTERM/SIGINT:  {"ready":true,"port":N,"endpoint":"http://127.0.0.1:N"}
 *
 * Two s3rver bugs are worked around by patching its filesystem store (the
 * package ships without bin/, so we drive lib/ directly anyway):
 *
 * (a) listObjects prunes its directory walk below the first delimiter after
 *     the prefix, so with prefix "p/" and delimiter "/" an object "p/a/b/c"
 *     (two or more levels below) is never seen and "p/a/" is missing from
 *     CommonPrefixes when "p/a/" holds no object directly. Litestream's
 *     "generations/" listing is exactly that shape. Its walk also yields keys
 *     in directory order, not S3's byte order, which breaks pagination
 *     ("a/b" sorts before "a-c" on disk). The replacement walks everything
 *     under the prefix's directory, sorts keys by UTF-8 bytes, then applies
 *     start-after, the delimiter and max-keys as S3 does.
 *
 * (b) deleteObject removes now-empty parent directories with readdirSync +
 *     rm -r. DeleteObjects runs all its deletes concurrently, so one delete's
 *     readdirSync hits a directory another just removed (ENOENT → HTTP 500),
 *     and the recursive rm can even remove an object written meanwhile. The
 *     replacement uses non-recursive rmdir and treats ENOENT/ENOTEMPTY as
 *     "someone else's job".
 *
 * (c) ListObjectsV2 continuation tokens are DES-encrypted; Node 20's OpenSSL 3
 *     has DES only in its legacy provider, so every truncated V2 listing is an
 *     HTTP 500 ("digital envelope routines::unsupported"). Node must run with
 *     --openssl-legacy-provider; we check at start and say so clearly.
 *
 * (d) XML answers are escaped twice: its builders' tagValueProcessor calls
 *     he.escape and fast-xml-parser's XMLBuilder escapes again, so key "a&b"
 *     is listed as "a&amp;amp;b". he.escape is only used there, so it is made
 *     the identity and the builder's own escaping remains (exactly once).
 *
 * (e) PutObject streams the body straight into the object's file and keeps
 *     whatever arrived: a client that gave up mid-upload (its deadline, while
 *     the server was stopped) leaves a short or empty object, which a real S3
 *     or MinIO never stores (the body must match Content-Length, else
 *     IncompleteBody), and a replica that is corrupt only on this server. The
 *     replacement writes a temp file beside it, checks the length, and only
 *     then renames it over the old version (which a failed upload keeps).
 *
 * (f) PutObject and CompleteMultipartUpload ignore If-None-Match: *, which
 *     AWS S3 (since August 2024) and MinIO honour: the write fails with 412
 *     PreconditionFailed when the key exists, checked when the object is
 *     committed. The request's headers reach the store through an
 *     AsyncLocalStorage set by a middleware placed first; the commit of (e)
 *     then links instead of renaming, which never replaces.
 *
 * Known and left alone: its DeleteObjects XML parser turns an all-digit key
 * ("00001") into a number and fails; litevisor's keys never look like that.
 *
 * --no-fix-list / --no-fix-delete / --no-fix-escape run s3rver as shipped
 * (tests prove the bugs are real with them). Required as a module, this file
 * only exports the replacements (tests call them on a bare store).
 */
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { AsyncLocalStorage } = require('async_hooks');
const { Transform } = require('stream');
const { pipeline } = require('stream/promises');

const LIB = path.join(__dirname, '..', 'node_modules', '@20minutes', 's3rver', 'lib');
const S3rver = require(path.join(LIB, 's3rver.js'));
const FilesystemStore = require(path.join(LIB, 'stores', 'filesystem.js'));
const S3Object = require(path.join(LIB, 'models', 'object.js'));
const AWSAccount = require(path.join(LIB, 'models', 'account.js'));
const S3Error = require(path.join(LIB, 'models', 'error.js'));

const OBJECT_SUFFIX = '._S3rver_object';
const UPLOADS_SUFFIX = '._S3rver_uploads';

function usage(msg) {
  process.stderr.write(`s3server.js: ${msg}\n`);
  process.exit(64);
}

function parseArgs(argv) {
  const o = { port: 0, buckets: [], fixList: true, fixDelete: true, fixEscape: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--dir') o.dir = val();
    else if (a === '--port') o.port = Number(val());
    else if (a === '--access-key') o.accessKey = val();
    else if (a === '--secret-key') o.secretKey = val();
    else if (a === '--bucket') o.buckets.push(val());
    else if (a === '--tls-key') o.tlsKey = fs.readFileSync(val());
    else if (a === '--tls-cert') o.tlsCert = fs.readFileSync(val());
    else if (a === '--no-fix-list') o.fixList = false;
    else if (a === '--no-fix-delete') o.fixDelete = false;
    else if (a === '--no-fix-escape') o.fixEscape = false;
    else usage(`unknown option ${a}`);
  }
  if (!o.dir || !o.accessKey || !o.secretKey) usage('--dir, --access-key and --secret-key are required');
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) usage('bad --port');
  return o;
}

// S3 orders keys by their UTF-8 bytes; JS strings compare UTF-16 units.
function byteCompare(a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

// Workaround (a): see the header.
async function listObjectsFixed(bucket, options) {
  const { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity } = options;
  const bucketPath = this.getBucketPath(bucket);
  const slash = prefix.lastIndexOf('/');
  const startKeyDir = slash >= 0 ? prefix.slice(0, slash + 1) : '';
  const keys = [];
  const walk = (dir, keyDir) => {
    let names;
    try {
      names = fs.readdirSync(dir);
    } catch (err) {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return;
      throw err;
    }
    for (const name of names) {
      const p = path.join(dir, name);
      let st;
      try {
        st = fs.statSync(p);
      } catch (err) {
        if (err.code === 'ENOENT') continue; // deleted while we walk
        throw err;
      }
      if (st.isDirectory()) {
        if (!name.endsWith(UPLOADS_SUFFIX)) walk(p, keyDir + name + '/');
      } else if (name.endsWith(OBJECT_SUFFIX)) {
        keys.push(keyDir + name.slice(0, -OBJECT_SUFFIX.length));
      }
    }
  };
  walk(path.join(bucketPath, ...startKeyDir.split('/').filter(Boolean)), startKeyDir);
  keys.sort(byteCompare);

  const commonPrefixes = new Set();
  const selected = [];
  let isTruncated = false;
  for (const key of keys) {
    if (!key.startsWith(prefix)) continue;
    if (startAfter && byteCompare(key, startAfter) <= 0) continue;
    if (delimiter) {
      const idx = key.indexOf(delimiter, prefix.length);
      if (idx !== -1) {
        commonPrefixes.add(key.slice(0, idx + delimiter.length));
        continue;
      }
    }
    if (selected.length < maxKeys) {
      selected.push(key);
    } else {
      isTruncated = true;
      break;
    }
  }
  const metadata = await Promise.all(
    selected.map((key) =>
      this.getMetadata(bucket, key).catch((err) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      }),
    ),
  );
  const objects = [];
  selected.forEach((key, i) => {
    if (metadata[i] !== undefined) objects.push(new S3Object(bucket, key, null, metadata[i]));
  });
  return { objects, commonPrefixes: [...commonPrefixes].sort(byteCompare), isTruncated };
}

// Workaround (b): see the header.
async function deleteObjectFixed(bucket, key) {
  await Promise.all(
    ['object', 'object.md5', 'metadata.json'].map((r) =>
      fs.promises.unlink(this.getResourcePath(bucket, key, r)).catch((err) => {
        if (err.code !== 'ENOENT') throw err;
      }),
    ),
  );
  const bucketPath = this.getBucketPath(bucket);
  const parts = key.split('/');
  parts.pop(); // the last part is the object's file name
  while (parts.length) {
    try {
      await fs.promises.rmdir(path.join(bucketPath, ...parts));
    } catch (err) {
      if (err.code === 'ENOENT' || err.code === 'ENOTEMPTY' || err.code === 'EEXIST') return;
      throw err;
    }
    parts.pop();
  }
}

// The body into file, its length and MD5 (s3rver's putContent answers for a buffer before it is written).
async function writeBody(file, content) {
  const md5 = crypto.createHash('md5');
  if (Buffer.isBuffer(content)) {
    await fs.promises.writeFile(file, content);
    return [content.length, md5.update(content).digest('hex')];
  }
  let size = 0;
  const count = new Transform({
    transform(chunk, encoding, callback) {
      md5.update(chunk, encoding);
      size += chunk.length;
      callback(null, chunk);
    },
  });
  await pipeline(content, count, fs.createWriteStream(file));
  return [size, md5.digest('hex')];
}

// Workaround (f): the current request's headers, for the store.
const requestHeaders = new AsyncLocalStorage();

// Workarounds (e) and (f): see the header.
async function putObjectWhole(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  await fs.promises.mkdir(path.dirname(objectPath), { recursive: true });
  const part = `${objectPath}.part-${process.pid}-${Math.random().toString(36).slice(2)}`;
  let size;
  let md5;
  try {
    [size, md5] = await writeBody(part, object.content);
  } catch (err) {
    await fs.promises.unlink(part).catch(() => {});
    throw err;
  }
  const want = object.metadata['content-length'];
  if (!this.lengthUnknown && want !== undefined && Number(want) !== size) {
    await fs.promises.unlink(part).catch(() => {});
    throw new S3Error('IncompleteBody',
      'You did not provide the number of bytes specified by the Content-Length HTTP header');
  }
  const headers = requestHeaders.getStore() || {};
  if (headers['if-none-match'] === '*') {
    try {
      await fs.promises.link(part, objectPath);
    } catch (err) {
      await fs.promises.unlink(part).catch(() => {});
      if (err.code === 'EEXIST')
        throw new S3Error('PreconditionFailed',
          'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' });
      throw err;
    }
    await fs.promises.unlink(part);
  } else {
    await fs.promises.rename(part, objectPath);
  }
  await this.putMetadata(object.bucket, object.key, object.metadata, md5);
  return { size, md5 };
}

// A multipart upload's object carries the initiating request's Content-Length: nothing to check.
const putObjectMultipartShipped = FilesystemStore.prototype.putObjectMultipart;
function putObjectMultipartWhole(...args) {
  return putObjectMultipartShipped.apply(Object.create(this, { lengthUnknown: { value: true } }), args);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  try {
    crypto.createCipheriv('des', Buffer.alloc(8), Buffer.alloc(8));
  } catch (err) {
    usage('DES unavailable (s3rver needs it for ListObjectsV2 paging): run node --openssl-legacy-provider');
  }
  if (o.fixList) FilesystemStore.prototype.listObjects = listObjectsFixed;
  if (o.fixDelete) FilesystemStore.prototype.deleteObject = deleteObjectFixed;
  FilesystemStore.prototype.putObject = putObjectWhole;
  FilesystemStore.prototype.putObjectMultipart = putObjectMultipartWhole;
  if (o.fixEscape) require(require.resolve('he', { paths: [LIB] })).escape = (text) => text; // (d)

  AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(o.accessKey, o.secretKey);

  fs.mkdirSync(o.dir, { recursive: true });
  const server = new S3rver({
    address: '127.0.0.1',
    port: o.port,
    directory: o.dir,
    silent: true,
    vhostBuckets: false,
    configureBuckets: o.buckets.map((name) => ({ name, configs: [] })),
    ...(o.tlsKey && o.tlsCert ? { key: o.tlsKey, cert: o.tlsCert } : {}),
  });
  server.middleware.unshift((ctx, next) => requestHeaders.run(ctx.headers, next)); // (f)
  const scheme = o.tlsKey && o.tlsCert ? 'https' : 'http';
  // s3rver turns unexpected exceptions into HTTP 500 and says nothing: show them
  server.on('error', (err) => {
    if (!err || !(err.status < 500))
      process.stderr.write(`s3server.js: ${err && err.stack ? err.stack : err}\n`);
  });
  const addr = await server.run();
  process.stdout.write(
    JSON.stringify({ ready: true, port: addr.port, endpoint: `${scheme}://127.0.0.1:${addr.port}` }) + '\n',
  );
  const stop = () => {
    server.close(() => process.exit(0));
    // keep-alive connections would hold close() open: do not wait for them
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`s3server.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
}

module.exports = { FilesystemStore, listObjectsFixed, deleteObjectFixed, putObjectWhole };
