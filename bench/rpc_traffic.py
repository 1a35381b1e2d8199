"""What the outlier sidecar adds to llama.cpp's RPC traffic, in bytes on the wire.

  python bench/rpc_traffic.py [--ftype Q3_K_M] [--prompt-tokens 64] [--gen-tokens 16] [--work DIR]

Two ggml-rpc-servers on 127.0.0.1 (one thread each) stand for two hosts; each sits
behind a relay in this process that forwards its TCP stream and counts the bytes in
each direction. A client process (this script with --client) registers the relays as
RPC devices (swgguf.runtime.rpc.connect, what llama.cpp's --rpc does), loads the model
with every layer offloaded (llama.cpp splits them over the two devices), evaluates a
prompt in one batch, then generates tokens one at a time (greedy). It stops after each
phase (load, prompt, first token, the other tokens) until this script has read the
counters. The same for SmolLM2-135M-Instruct
protected (`swgguf convert --protect-sw`, defaults) and the same file without its
sidecar (the same weight bytes). Writes bench/results/rpc_traffic_smollm2.json.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
# llama.cpp sends a graph to a server when its shape is new and afterwards only asks it
# to run it again (RPC_CMD_GRAPH_RECOMPUTE): the first generated token is apart
PHASES = ("load", "prompt", "first_token", "next_tokens")
OUT = ROOT / "bench" / "results" / "rpc_traffic_smollm2.json"
# what llama.cpp's log says about where things went
MODEL_BUFFER = re.compile(r"load_tensors: +(\S+) model buffer size = +([\d.]+) MiB")


# ggml-rpc.cpp enum rpc_cmd (protocol 7.0.0); a request is | cmd (1 byte) | size (u64) | data |
RPC_COMMANDS = ("ALLOC_BUFFER", "GET_ALIGNMENT", "GET_MAX_SIZE", "BUFFER_GET_BASE", "FREE_BUFFER", "BUFFER_CLEAR",
                "SET_TENSOR", "SET_TENSOR_HASH", "GET_TENSOR", "COPY_TENSOR", "GRAPH_COMPUTE", "GET_DEVICE_MEMORY",
                "INIT_TENSOR", "GET_ALLOC_SIZE", "HELLO", "DEVICE_COUNT", "GRAPH_RECOMPUTE", "MEMSET_TENSOR")
HEADER = 9


class CommandTally:
    """Bytes of the client's requests by command, read from the stream as it passes."""

    def __init__(self) -> None:
        self.bytes: Counter[str] = Counter()
        self.header, self.left, self.cmd = b"", 0, ""

    def feed(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            if self.left:
                n = min(self.left, len(data) - i)
                self.bytes[self.cmd] += n
                self.left, i = self.left - n, i + n
                continue
            take = data[i:i + HEADER - len(self.header)]
            self.header, i = self.header + take, i + len(take)
            if len(self.header) == HEADER:
                code = self.header[0]
                self.cmd = RPC_COMMANDS[code] if code < len(RPC_COMMANDS) else f"cmd{code}"
                self.left = int.from_bytes(self.header[1:], "little")
                self.bytes[self.cmd] += HEADER
                self.header = b""


class Relay:
    """A TCP relay 127.0.0.1:port -> upstream that counts the bytes each way."""

    def __init__(self, upstream: int):
        self.upstream, self.sent, self.received = upstream, 0, 0  # sent: client -> server
        self.requests = CommandTally()
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, self.upstream))
            threading.Thread(target=self._pump, args=(client, server, "sent"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "received"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counter: str) -> None:
        try:
            while data := src.recv(1 << 20):
                setattr(self, counter, getattr(self, counter) + len(data))  # one writer per counter
                if counter == "sent":
                    self.requests.feed(data)  # one client at a time: the server serves connections in turn
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # shutdown, not close: it wakes the other direction's recv and sends the FIN the
            # single-client ggml-rpc-server waits for before it serves the next connection
            for s in (dst, src):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def counts(self) -> tuple[int, int, Counter[str]]:
        return self.sent, self.received, Counter(self.requests.bytes)


@contextmanager
def rpc_server(exe: Path, work: Path):
    """A ggml-rpc-server on a free port (the OS's), stopped at the end."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    log = open(work / f"rpc-{port}.log", "wb")
    proc = subprocess.Popen([str(exe), "-H", HOST, "-p", str(port), "-t", "1"], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        for _ in range(600):
            with socket.socket() as s:
                if s.connect_ex((HOST, port)) == 0:
                    break
            if proc.poll() is not None:
                raise SystemExit(f"ggml-rpc-server exited: {(work / f'rpc-{port}.log').read_text()[-2000:]}")
            threading.Event().wait(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def client(model: str, endpoints: str, n_prompt: int, n_gen: int) -> None:
    """The measured process: load, prompt, generate; waits on stdin after each phase."""
    from swgguf.runtime import llm, rpc

    lines: list[str] = []
    with llm.log_sink(lambda level, line: lines.append(line)):
        rpc.connect(rpc.parse_endpoints(endpoints))
        m = llm.load(model, llm.LoadOptions(n_ctx=n_prompt + n_gen, n_threads=1, n_gpu_layers=99))
    phase("load")
    m.eval([1 + (37 * i) % 4000 for i in range(n_prompt)])
    phase("prompt")
    m.eval([int(np.argmax(m.scores[m.n_tokens - 1]))])
    phase("first_token")
    for _ in range(n_gen - 1):
        m.eval([int(np.argmax(m.scores[m.n_tokens - 1]))])
    phase("next_tokens")
    log = "".join(lines)
    print(json.dumps({"sidecars": llm.sidecar_uploads(log),
                      "model_buffers": [(buf, float(mib)) for buf, mib in MODEL_BUFFER.findall(log)]}), flush=True)


def phase(name: str) -> None:
    print(f"PHASE {name}", flush=True)
    sys.stdin.readline()


def measure(model: Path, servers: list[int], n_prompt: int, n_gen: int) -> dict:
    """Bytes client -> servers and back in each phase, and what the log says."""
    relays = [Relay(port) for port in servers]
    endpoints = ",".join(f"{HOST}:{r.port}" for r in relays)
    proc = subprocess.Popen([sys.executable, __file__, "--client", str(model), endpoints, str(n_prompt), str(n_gen)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out: dict = {"phases": {}}
    before = [(0, 0, Counter())] * len(relays)
    for name in PHASES:
        line = proc.stdout.readline().strip()
        if line != f"PHASE {name}":
            proc.kill()
            raise SystemExit(f"client: expected phase {name}, got {line!r}")
        now = [r.counts() for r in relays]
        out["phases"][name] = {"sent": [a[0] - b[0] for a, b in zip(now, before)],
                               "received": [a[1] - b[1] for a, b in zip(now, before)],
                               "requests": dict(sum((a[2] - b[2] for a, b in zip(now, before)), Counter()))}
        before = now
        proc.stdin.write("\n")
        proc.stdin.flush()
    log = proc.stdout.readline()
    for i, r in enumerate(relays):  # the relays' ports change from run to run: name the servers
        log = log.replace(f"{HOST}:{r.port}", f"server{i + 1}")
    out.update(json.loads(log))
    if proc.wait() != 0:
        raise SystemExit(f"client failed on {model.name}")
    for r in relays:
        r.sock.close()
    return out


def files(ftype: str, work: Path) -> dict[str, Path]:
    """SmolLM2 protected (defaults) and the same file without its sidecar, made once in ``work``."""
    from swgguf import conversion as cv
    from swgguf.conversion.inputs import strip_sidecars
    from swgguf.default_model import default_model_path

    protected, plain = work / f"smollm2-{ftype.lower()}-sw.gguf", work / f"smollm2-{ftype.lower()}.gguf"
    if not protected.is_file():
        ref = cv.make_f16_reference(default_model_path(), work / "f16.gguf")
        cv.convert(ref, protected, cv.ConvertOptions.from_flags(ftype=ftype, protect_sw=True))
    if not plain.is_file():
        strip_sidecars(protected, work, []).rename(plain)
    return {"plain": plain, "protected": protected}


def summary(runs: dict[str, dict], n_gen: int) -> dict:
    """Totals over both servers, and the protected file's extra bytes."""
    out = {}
    for name in PHASES:
        tot = {k: {d: sum(r["phases"][name][d]) for d in ("sent", "received")} for k, r in runs.items()}
        req = {k: Counter(r["phases"][name]["requests"]) for k, r in runs.items()}
        extra = {c: req["protected"][c] - req["plain"][c] for c in req["protected"] | req["plain"]}
        out[name] = {**tot, "extra_sent": tot["protected"]["sent"] - tot["plain"]["sent"],
                     "extra_received": tot["protected"]["received"] - tot["plain"]["received"],
                     "extra_requests": {c: v for c, v in sorted(extra.items()) if v}}
    out["per_next_token"] = {k: {d: out["next_tokens"][k][d] / (n_gen - 1) for d in ("sent", "received")}
                             for k in runs}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ftype", default="Q3_K_M")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=16, help="at least 2")
    ap.add_argument("--work", type=Path, help="keeps the converted files between runs (default: a temporary folder)")
    ap.add_argument("--client", nargs=4, metavar=("MODEL", "ENDPOINTS", "N_PROMPT", "N_GEN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        model, endpoints, n_prompt, n_gen = args.client
        return client(model, endpoints, int(n_prompt), int(n_gen))
    if args.gen_tokens < 2:
        ap.error("--gen-tokens must be at least 2")
    from swgguf.runtime.build import tools_dir

    with ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swgguf-rpc-")))
        work.mkdir(parents=True, exist_ok=True)
        paths = files(args.ftype, work)
        servers = [stack.enter_context(rpc_server(tools_dir() / "ggml-rpc-server", work)) for _ in range(2)]
        runs = {k: measure(p, servers, args.prompt_tokens, args.gen_tokens) for k, p in paths.items()}
        file_bytes = {k: p.stat().st_size for k, p in paths.items()}
    # --work only says where the files are kept: left out of the record (no local paths)
    flags = f"--ftype {args.ftype} --prompt-tokens {args.prompt_tokens} --gen-tokens {args.gen_tokens}"
    result = {"command": f"python bench/rpc_traffic.py {flags}",
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "model": "SmolLM2-135M-Instruct", "ftype": args.ftype, "prompt_tokens": args.prompt_tokens,
              "gen_tokens": args.gen_tokens, "rpc_servers": 2,
              "file_bytes": file_bytes,
              "runs": runs, "summary": summary(runs, args.gen_tokens)}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(json.dumps({k: {"sidecars": r["sidecars"], "model_buffers": r["model_buffers"]} for k, r in runs.items()},
                     indent=1))


if __name__ == "__main__":
    main()
