#!/usr/bin/env python3
"""The attacker of the trust tests (cli/tests/it/trust.rs): waits for an inotify event, then at
once changes the tree under the feet of the vrift process being tested — as a real attacker
(or an unlucky concurrent writer) would, reacting within microseconds of the trigger instead
of hoping a busy loop wins the race.

usage: attacker.py WATCH EVENT NAME ACTION ARGS...
  WATCH   a directory (or, for EVENT=access, a file) to watch
  EVENT   create | moved_to | access   (NAME: the entry of WATCH that triggers; '-' for any)
  ACTION  swap VICTIM TARGET     rename VICTIM to VICTIM.orig (as soon as it exists), put a
                                 symlink VICTIM -> TARGET
          rewrite FILE CONTENT   overwrite FILE in place (same inode) with CONTENT
Prints "ready" once watching and "done" after acting, then exits.
"""
import ctypes
import os
import struct
import sys

IN_ACCESS, IN_MOVED_TO, IN_CREATE = 0x1, 0x80, 0x100
EVENTS = {"create": IN_CREATE, "moved_to": IN_MOVED_TO, "access": IN_ACCESS}

watch, event, name, action, *args = sys.argv[1:]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
if fd < 0 or libc.inotify_add_watch(fd, watch.encode(), EVENTS[event]) < 0:
    sys.exit(f"attacker: cannot watch {watch}: errno {ctypes.get_errno()}")
print("ready", flush=True)
want = name.encode()
hit = False
while not hit:
    buf = os.read(fd, 65536)
    off = 0
    while off < len(buf):
        _wd, _mask, _cookie, ln = struct.unpack_from("iIII", buf, off)
        got = buf[off + 16 : off + 16 + ln].rstrip(b"\0")
        off += 16 + ln
        if name == "-" or got == want:
            hit = True
if action == "swap":
    victim, target = args
    # The trigger may come a hair before the victim exists (mkdir of a sibling): spin on it.
    for _ in range(1_000_000):
        try:
            os.rename(victim, victim + ".orig")
            break
        except FileNotFoundError:
            continue
    os.symlink(target, victim)
elif action == "rewrite":
    path, content = args
    with open(path, "r+b") as f:
        f.write(content.encode())
else:
    sys.exit(f"attacker: unknown action {action}")
print("done", flush=True)
