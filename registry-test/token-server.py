#!/usr/bin/env python3
"""A small token server for distribution's token auth, for tests only (127.0.0.1, stdlib + openssl CLI).

GET /token?service=...&scope=repository:NAME:ACTIONS... with HTTP Basic credentials answers
{"token": JWT} granting the requested actions, signed RS256 with --key and carrying --cert in x5c, which
the registry trusts through its rootcertbundle. Wrong credentials get 401. With --deny-cross-repo, a
request for several repositories is granted the first only, so cross-repository mounts are refused.
"""
import argparse, base64, json, subprocess, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--deny-cross-repo", action="store_true")
    args = ap.parse_args()
    der = subprocess.run(["openssl", "x509", "-in", args.cert, "-outform", "DER"], check=True, capture_output=True).stdout
    x5c = base64.b64encode(der).decode()
    expected = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):  # keep the log free of credentials: only the path's scopes
            pass

        def do_GET(self):
            url = urlparse(self.path)
            if url.path != "/token":
                self.send_response(404); self.end_headers(); return
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="envlayer-test-token"')
                self.end_headers(); return
            q = parse_qs(url.query)
            access = []
            for scope in q.get("scope", []):
                for s in scope.split(" "):
                    parts = s.split(":")
                    if len(parts) < 3 or parts[0] != "repository":
                        continue
                    name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
                    if args.deny_cross_repo and access:
                        continue
                    access.append({"type": "repository", "name": name, "actions": actions})
            now = int(time.time())
            header = {"alg": "RS256", "typ": "JWT", "x5c": [x5c]}
            claims = {"iss": "envlayer-test-issuer", "sub": args.user, "aud": q.get("service", [""])[0],
                      "exp": now + 600, "nbf": now - 10, "iat": now, "jti": str(uuid.uuid4()), "access": access}
            signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
            sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", args.key], input=signing_input.encode(),
                                 check=True, capture_output=True).stdout
            body = json.dumps({"token": f"{signing_input}.{b64(sig)}", "expires_in": 600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()

if __name__ == "__main__":
    main()
