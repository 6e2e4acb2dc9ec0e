// Sink on nodemailer's smtp-server: reads every message to the end, drops it.
//
//   node bench/servers/smtp_server_sink.js [--port N] [--tls-cert C --tls-key K [--secure]]
//
// NODE_PATH must lead to the node_modules holding smtp-server (bench/run.py
// installs it into bench/.scratch/node). Options for a fair sink: no auth
// required, no reverse DNS, no size limit, no logging, no client limit.
// smtp-server always waits 100 ms before its greeting (early-talker
// detection, not configurable), which bounds workloads that open a
// connection per message.
//
// Prints "READY port=<port> pid=<pid>" once listening, serves until SIGTERM,
// then prints "STATS messages=<n> bytes=<n>" and exits.
'use strict';

const fs = require('fs');
const { SMTPServer } = require('smtp-server');

function option(name) {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : undefined;
}

const port = Number(option('--port') || 0);
const certFile = option('--tls-cert');
const keyFile = option('--tls-key');
const secure = process.argv.includes('--secure');

let messages = 0;
let bytes = 0;

const options = {
    name: 'bench.localhost',
    secure,
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
    size: 0,
    maxClients: 0,
    onData(stream, session, callback) {
        stream.on('data', chunk => {
            bytes += chunk.length;
        });
        stream.on('end', () => {
            messages += 1;
            callback();
        });
    }
};
if (certFile) {
    options.cert = fs.readFileSync(certFile);
    options.key = fs.readFileSync(keyFile);
} else {
    options.hideSTARTTLS = true;
}

const server = new SMTPServer(options);
server.on('error', err => console.error('smtp-server error:', err.message));
server.listen(port, '127.0.0.1', () => {
    console.log(`READY port=${server.server.address().port} pid=${process.pid}`);
});
process.on('SIGTERM', () => {
    process.stdout.write(`STATS messages=${messages} bytes=${bytes}\n`, () => process.exit(0));
});
