"""An OTLP logs receiver built from the OpenTelemetry project's own definitions (PyPI
opentelemetry-proto, grpcio): OTLP/gRPC and OTLP/HTTP (protobuf) on 127.0.0.1, each on a
port of its own. Every request received is appended to OUT as one JSON line (protobuf's own
JSON mapping), with how it came ("_via"). Prints {"grpc": PORT, "http": PORT} when ready.

    otlp_receiver.py OUT [--tls CERT KEY]     (TLS: both servers speak it)
"""
import json
import ssl
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

out = open(sys.argv[1], "a", encoding="utf-8")
lock = threading.Lock()
tls = sys.argv[2:5] if len(sys.argv) > 2 and sys.argv[2] == "--tls" else None


def record(req, via):
    d = MessageToDict(req)
    d["_via"] = via
    with lock:
        out.write(json.dumps(d) + "\n")
        out.flush()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request, context):
        meta = {k: v for k, v in context.invocation_metadata()}
        record(request, "grpc " + json.dumps(meta.get("x-tenant")))
        return logs_service_pb2.ExportLogsServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
if tls:
    creds = grpc.ssl_server_credentials([(open(tls[2], "rb").read(), open(tls[1], "rb").read())])
    grpc_port = server.add_secure_port("127.0.0.1:0", creds)
else:
    grpc_port = server.add_insecure_port("127.0.0.1:0")
server.start()


class Http(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = logs_service_pb2.ExportLogsServiceRequest()
        req.ParseFromString(body)
        record(req, "http %s %s" % (self.path, self.headers.get("Content-Type", "")))
        resp = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(resp)))
        self.end_headers()
        self.wfile.write(resp)

    def log_message(self, *args):
        pass


httpd = HTTPServer(("127.0.0.1", 0), Http)
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls[1], tls[2])
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print(json.dumps({"grpc": grpc_port, "http": httpd.server_port}), flush=True)
httpd.serve_forever()
