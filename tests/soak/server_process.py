# tests/soak/server_process.py — tests/soak/server.py run as a child process on a backend, and its command channel
# (see server.py for the commands), for the soak run and for the suite's EMFILE test.
import json
import os
import subprocess
import sys
import time

SERVER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py")


class ServerProcess:
    def __init__(self, backend, unix_path):
        # The child imports the same zloop build as this process.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen([sys.executable, SERVER_SCRIPT, "--backend", backend, "--unix", unix_path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        hello = self.read()
        self.addresses = [tuple(hello["tcp"]), hello["unix"]]

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the server exited with status {self.proc.wait()}")
        return json.loads(line)

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def settle(self, timeout, watched=None):
        """A sample once every connection has gone and, with watched, the server watches that many fds again (a
        pending accept retry has run); the last sample when timeout seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            sample = self.ask("sample")
            done = sample["transports"] == 0 and (watched is None or sample["watched"] == watched)
            if done or time.monotonic() > deadline:
                return sample
            time.sleep(0.05)

    def quit(self, timeout):
        """Close the servers; the final sample and the exit status."""
        sample = self.ask("quit")
        return sample, self.proc.wait(timeout)

    def close(self):
        """Whatever state it is in: the process ends and its pipes are closed."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
