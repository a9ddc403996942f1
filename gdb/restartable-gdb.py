# restartable-gdb.py: make gdb's stepping commands finish over Linux restartable
# sequences (rseq).
#
# Load it with `source restartable-gdb.py` (the `rseq gdb-script` command prints this
# file), then use gdb as usual: `stepi`, `nexti`, `step` and `next` now get past
# restartable sequences instead of looping forever.
#
# The problem
# -----------
# A stop anywhere inside a restartable sequence (a single step, a breakpoint) makes
# the kernel abort that attempt when the thread resumes: the instruction pointer is
# moved to the abort handler, which jumps back to retry. Under single-stepping every
# attempt is stopped, so the retry loop never commits and `stepi`/`next` never get
# past it.
#
# What this extension does
# ------------------------
# It reads the reference tables that the C library librseq, the kernel selftests and
# the Rust `restartable` crate emit (section `__rseq_cs`: 32-byte `struct rseq_cs`
# descriptors; `__rseq_cs_ptr_array`: one pointer per descriptor;
# `__rseq_exit_point_array`: (start_ip, exit_ip) pairs) from the inferior's memory,
# after the dynamic loader has relocated them. Then:
#
#   * After a stepping command that stopped inside [start_ip, post_commit_ip) of a
#     sequence (that attempt is doomed), it puts temporary, thread-specific
#     breakpoints at the post-commit address and at the sequence's exit points only
#     (not at the abort handler: stopping there would only start the loop again),
#     lets the thread run freely (the abort path and the retry run without stops, and
#     the next attempt commits), removes the breakpoints and leaves the thread at the
#     post-commit address or the exit point taken. Breakpoints inside the sequence,
#     and one where the command began (often the retry loop's head), are disabled
#     meanwhile. When an exit point is also on the retry path (compilers merge the
#     exit target with the loop head the abort handler jumps back to), a stop there
#     counts as the exit only if the thread's `rseq_cs` still points at the
#     descriptor (the kernel clears it when it aborts); the thread's rseq area comes
#     from PTRACE_GET_RSEQ_CONFIGURATION, or glibc's `__rseq_offset`.
#   * `step`, `next` (and a count, `stepi 100`) single-step inside gdb, where no
#     Python hook runs. So while one of the four commands runs, the extension plants
#     internal, thread-specific "guard" breakpoints at the start of every sequence; a
#     guard stops the command, the thread is run to the post-commit address as above,
#     and a `step`/`next` is issued again from there unless it already stands at the
#     start of a new line, so it ends on the next source line as it would have without
#     rseq. When the guard was hit in a function called from the line being stepped
#     (`next` over a call), that function is first run to its return, as `finish`
#     does. The guards are removed as soon as the command ends: a breakpoint at a
#     sequence start while the program runs freely would abort every attempt.
#
# Commands added: `info rseq` (list the sequences of the running program) and the
# setting `set rseq-step on|off` (default on; off restores gdb's plain behaviour).
#
# What does not work (plainly)
# ----------------------------
#   * Only the CLI commands `step`, `next`, `stepi`, `nexti` (and their aliases `s`,
#     `n`, `si`, `ni`) are handled, through gdb's command hooks `hook-X` and
#     `hookpost-X`. Loading the extension replaces user-defined hooks of these four
#     commands. Front ends that step with MI commands (`-exec-next`, as IDEs do) do
#     not run these hooks.
#   * A count (`next 3`, `stepi 100`) is cut short when a sequence is met: the command
#     ends after the sequence, at the next line (`step`/`next`) or at the post-commit
#     address (`stepi`/`nexti`).
#   * `until` without an argument single-steps like `next` and is not handled: use
#     `next`. `continue`, `finish`, `until LOCATION` and `advance` run freely and need
#     no help (unless a user breakpoint sits inside a sequence, see below).
#   * A stop inside a sequence caused by a user breakpoint or a signal is left alone
#     (a note is printed) so that the state can be looked at; the next stepping
#     command runs the sequence to its commit. A user breakpoint inside a sequence
#     stops every retry: `continue` keeps stopping there until it is deleted.
#   * The tables are read from the running program's memory; before `run` (or for a
#     position-independent binary before its relocation) `info rseq` has nothing to
#     show. Only x86_64 inferiors are supported (64-bit little-endian tables,
#     `$fs_base`).
#   * In all-stop mode other threads run while the thread is run to its commit; a
#     thread that reaches a guard breakpoint of another thread's command traps, and
#     its own attempt aborts and retries (harmless, but it can slow that command).

import re
import struct

import gdb

RSEQ_CS_SIZE = 32
_SECTION_RE = re.compile(
    r"^\s*0x([0-9a-fA-F]+) - 0x([0-9a-fA-F]+) is (\S+)(?: in (.*))?$", re.M
)
_RSEQ_SECTIONS = ("__rseq_cs", "__rseq_cs_ptr_array", "__rseq_exit_point_array")
_HOOKED = ("step", "next", "stepi", "nexti")
_MAX_ROUNDS = 1000


class Sequence:
    """One restartable sequence: [start, post_commit), its abort handler and exits."""

    __slots__ = ("start", "post_commit", "abort", "exits", "descriptor", "objfile")

    def __init__(self, start, post_commit, abort, descriptor, objfile):
        self.start = start
        self.post_commit = post_commit
        self.abort = abort
        self.exits = []
        self.descriptor = descriptor
        self.objfile = objfile

    def contains(self, pc):
        """True if `pc` is inside the critical section [start, post_commit)."""
        return self.start <= pc < self.post_commit


class _Tables:
    """The sequences of the current inferior, read lazily from its memory."""

    def __init__(self):
        self._sequences = None
        self.notes = []

    def invalidate(self, *_args):
        """Forget the cached tables (new objfiles, a new process, an exit)."""
        self._sequences = None

    def sequences(self):
        """All the sequences, sorted by start address (empty if not running)."""
        if self._sequences is None:
            self._sequences = self._read()
        return self._sequences

    def find(self, pc):
        """The sequence whose critical section contains `pc`, or None."""
        for seq in self.sequences():
            if seq.contains(pc):
                return seq
        return None

    def _read(self):
        self.notes = []
        try:
            inferior = gdb.selected_inferior()
            if inferior.pid == 0:
                return []
            text = gdb.execute("info files", to_string=True)
        except gdb.error:
            return []
        by_file = {}
        for m in _SECTION_RE.finditer(text):
            name = m.group(3)
            if name in _RSEQ_SECTIONS:
                where = m.group(4) or "the executable"
                by_file.setdefault(where, {})[name] = (
                    int(m.group(1), 16),
                    int(m.group(2), 16),
                )
        found = []
        for where, sections in by_file.items():
            try:
                found.extend(self._read_file(inferior, where, sections))
            except (gdb.error, gdb.MemoryError, struct.error) as err:
                self.notes.append("%s: cannot read the rseq tables: %s" % (where, err))
        found.sort(key=lambda s: (s.start, s.post_commit))
        return found

    def _read_file(self, inferior, where, sections):
        def read(lo, hi):
            return bytes(inferior.read_memory(lo, hi - lo)) if hi > lo else b""

        descriptors = set()
        if "__rseq_cs_ptr_array" in sections:
            data = read(*sections["__rseq_cs_ptr_array"])
            for (ptr,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8]):
                if ptr:
                    descriptors.add(ptr)
        if "__rseq_cs" in sections:
            lo, hi = sections["__rseq_cs"]
            # Descriptors missing from the pointer array are still sequences.
            addr = (lo + RSEQ_CS_SIZE - 1) // RSEQ_CS_SIZE * RSEQ_CS_SIZE
            while addr + RSEQ_CS_SIZE <= hi:
                _v, _f, start, offset, abort = struct.unpack(
                    "<IIQQQ", read(addr, addr + RSEQ_CS_SIZE)
                )
                if start and offset:
                    descriptors.add(addr)
                addr += RSEQ_CS_SIZE
        seqs = {}
        for addr in sorted(descriptors):
            _v, _f, start, offset, abort = struct.unpack(
                "<IIQQQ", read(addr, addr + RSEQ_CS_SIZE)
            )
            if start == 0 or offset == 0:
                self.notes.append(
                    "%s: descriptor at 0x%x is not relocated or empty" % (where, addr)
                )
                continue
            seqs.setdefault(start, Sequence(start, start + offset, abort, addr, where))
        if "__rseq_exit_point_array" in sections:
            data = read(*sections["__rseq_exit_point_array"])
            for start, exit_ip in struct.iter_unpack(
                "<QQ", data[: len(data) // 16 * 16]
            ):
                seq = seqs.get(start)
                if seq is not None and exit_ip not in seq.exits:
                    seq.exits.append(exit_ip)
        return list(seqs.values())


_tables = _Tables()


class _RseqStepParameter(gdb.Parameter):
    """Whether stepping commands run restartable sequences to their commit."""

    set_doc = "Set whether stepping runs restartable sequences (rseq) to their commit."
    show_doc = "Show whether stepping runs restartable sequences (rseq) to their commit."

    def __init__(self):
        super().__init__("rseq-step", gdb.COMMAND_RUNNING, gdb.PARAM_BOOLEAN)
        self.value = True

    def get_show_string(self, svalue):
        return "Running restartable sequences to their commit when stepping is %s." % (
            svalue
        )

    def get_set_string(self):
        return ""


# Kept across a second `source`, so `set rseq-step` keeps its value.
_param = globals().get("_param") or _RseqStepParameter()


class _State:
    """What the stepping command in progress is, and what its stops were."""

    def __init__(self):
        self.command = None  # the hooked command in progress
        self.frame = None  # the frame selected when it started
        self.guards = []  # guard breakpoints at sequence starts
        self.last_stop = None  # "step", "guard", "breakpoint", "signal"
        self.busy = False  # running a sequence to its commit
        self.start_pc = None  # where the stepping command began
        self.start_line = None  # (line, file) where the stepping command began


_state = _State()


def _pc():
    return int(gdb.selected_frame().pc())


def _has_thread():
    try:
        return gdb.selected_thread() is not None and gdb.selected_inferior().pid != 0
    except gdb.error:
        return False


def _describe(seq):
    return "[0x%x, 0x%x) abort 0x%x" % (seq.start, seq.post_commit, seq.abort)


def _new_internal_bp(addr, thread):
    bp = gdb.Breakpoint("*0x%x" % addr, internal=True)
    bp.silent = True
    if thread is not None:
        bp.thread = thread
    return bp


def _delete_all(bps):
    for bp in bps:
        try:
            if bp.is_valid():
                bp.delete()
        except (gdb.error, RuntimeError):
            pass


def _arm_guards():
    _disarm_guards()
    if not _param.value or not _has_thread():
        return
    thread = gdb.selected_thread().global_num
    pc = _pc()
    for seq in _tables.sequences():
        # A guard right under the pc would stop the command at once.
        if seq.start != pc:
            _state.guards.append(_new_internal_bp(seq.start, thread))


def _disarm_guards():
    guards, _state.guards = _state.guards, []
    _delete_all(guards)


def _bp_addresses(bp):
    try:
        return [int(loc.address) for loc in bp.locations if loc.enabled]
    except (AttributeError, gdb.error, RuntimeError):
        return []


def run_to_commit(seq, quiet=False):
    """Run the selected thread freely until `seq` commits or takes an exit point.

    Returns "post-commit", "exit point" or None (stopped elsewhere, e.g. at another
    breakpoint, a signal or the program's end).
    """
    thread = gdb.selected_thread()
    # Breakpoints inside the sequence would abort every retry, and one where the
    # stepping command began (often the retry loop's head) would stop every retry:
    # switch them off while the thread runs.
    paused = []
    for bp in gdb.breakpoints():
        addresses = _bp_addresses(bp)
        if bp.enabled and (
            any(seq.contains(a) for a in addresses) or _state.start_pc in addresses
        ):
            bp.enabled = False
            paused.append(bp)
    targets = [seq.post_commit] + seq.exits
    temps = [_new_internal_bp(a, thread.global_num) for a in targets]
    area = _rseq_area(thread) if seq.exits else None
    reached = None
    _state.busy = True
    try:
        for _ in range(_MAX_ROUNDS):
            gdb.execute("continue", to_string=True)
            if not _has_thread() or not thread.is_valid():
                break
            pc = _pc()
            if gdb.selected_thread() != thread or pc not in targets:
                break
            if pc == seq.post_commit:
                reached = "post-commit"
                break
            # An exit point can also lie on the retry path (the compiler may merge
            # the exit target with the loop head the abort handler jumps to). A real
            # exit leaves the thread's rseq_cs pointing at the descriptor; the kernel
            # clears it when it aborts an attempt.
            if area is None or _read_u64(area + 8) in (seq.descriptor, None):
                reached = "exit point"
                break
    except gdb.error as err:
        print("rseq: running the sequence %s to its commit failed: %s" % (_describe(seq), err))
    finally:
        _state.busy = False
        _delete_all(temps)
        for bp in paused:
            if bp.is_valid():
                bp.enabled = True
    if reached is not None:
        if not quiet:
            print(
                "rseq: ran the restartable sequence %s to its %s 0x%x"
                % (_describe(seq), reached, _pc())
            )
        return reached
    if _has_thread():
        print(
            "rseq: stopped at 0x%x before the sequence %s committed"
            % (_pc(), _describe(seq))
        )
    return None


PTRACE_GET_RSEQ_CONFIGURATION = 0x420F


def _rseq_area(thread):
    """The address of `thread`'s registered `struct rseq`, or None if unknown.

    Asks the kernel (PTRACE_GET_RSEQ_CONFIGURATION, Linux 5.13+; gdb's process is
    the tracer), else glibc (thread pointer + `__rseq_offset`, glibc 2.35+).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.restype = ctypes.c_long
        conf = (ctypes.c_uint64 * 3)()
        got = libc.ptrace(
            ctypes.c_long(PTRACE_GET_RSEQ_CONFIGURATION),
            ctypes.c_long(thread.ptid[1]),
            ctypes.c_void_p(ctypes.sizeof(conf)),
            ctypes.byref(conf),
        )
        if got >= 16 and conf[0]:
            return int(conf[0])
    except (ImportError, OSError, AttributeError, ValueError):
        pass
    try:
        if int(gdb.parse_and_eval("(unsigned int) __rseq_size")) != 0:
            return int(gdb.parse_and_eval("$fs_base")) + int(
                gdb.parse_and_eval("(long) __rseq_offset")
            )
    except (gdb.error, RuntimeError):
        pass
    return None


def _read_u64(addr):
    try:
        return struct.unpack("<Q", bytes(gdb.selected_inferior().read_memory(addr, 8)))[0]
    except (gdb.error, gdb.MemoryError):
        return None


def _child_of(start):
    """The frame called by `start` if the thread is below it in a real call.

    None when the newest frame is `start` or only inlined frames separate them (the
    sequence is inlined into the function being stepped), or when `start` is gone.
    """
    frame = gdb.newest_frame()
    child = None
    only_inline = True
    while frame is not None:
        if frame == start:
            return None if only_inline else child
        if frame.type() != gdb.INLINE_FRAME:
            only_inline = False
        child = frame
        frame = frame.older()
    return None


def _return_to(start, child):
    """Run until the function `child` returns into `start`, as `finish` does, quietly.

    No guards are armed, so the sequences that function runs commit freely.
    """
    thread = gdb.selected_thread()
    return_pc = int(child.older().pc())
    bp = _new_internal_bp(return_pc, thread.global_num)
    _state.busy = True
    try:
        for _ in range(_MAX_ROUNDS):
            gdb.execute("continue", to_string=True)
            if not _has_thread() or _pc() != return_pc:
                print("rseq: stopped before returning to the stepped function")
                return False
            if gdb.newest_frame() == start or not start.is_valid():
                return True
        return False
    except gdb.error as err:
        print("rseq: returning to the stepped function failed: %s" % err)
        return False
    finally:
        _state.busy = False
        _delete_all([bp])


def _print_location(start_frame):
    """Print where the thread is now, the way gdb prints the end of a step."""
    try:
        text = gdb.execute("frame 0", to_string=True).splitlines()
    except gdb.error:
        return
    if not text:
        return
    frame = gdb.newest_frame()
    pc = int(frame.pc())
    same = start_frame is not None and start_frame.is_valid() and frame == start_frame
    if same and len(text) > 1:
        prefix = "" if _at_line_start(pc) else "0x%016x\t" % pc
        print(prefix + "\n".join(text[1:]))
    else:
        print(re.sub(r"^#0\s+", "", "\n".join(text)))


def _at_new_line(start_frame):
    """True where gdb's `step`/`next` would stop: the start of a line that is not
    the line being stepped (or the same line in another frame)."""
    pc = _pc()
    if not _at_line_start(pc):
        return False
    if start_frame is None or not start_frame.is_valid():
        return True
    if gdb.newest_frame() != start_frame:
        return True
    sal = gdb.find_pc_line(pc)
    return (sal.line, _symtab_name(sal)) != _state.start_line


def _symtab_name(sal):
    return sal.symtab.filename if sal.symtab is not None else None


def _at_line_start(pc):
    sal = gdb.find_pc_line(pc)
    return sal.symtab is not None and sal.pc == pc and sal.line != 0


def _before(command):
    _tables.invalidate()
    _state.command = command
    _state.last_stop = None
    _state.frame = None
    _state.start_pc = None
    _state.start_line = None
    try:
        if _has_thread():
            _state.frame = gdb.selected_frame()
            _state.start_pc = _pc()
            sal = gdb.find_pc_line(_state.start_pc)
            _state.start_line = (sal.line, _symtab_name(sal))
    except gdb.error:
        pass
    _arm_guards()


def _after(command):
    _disarm_guards()
    start_frame, _state.frame = _state.frame, None
    _state.command = None
    if not _param.value or not _has_thread():
        return
    if _state.last_stop in ("breakpoint", "signal"):
        seq = _tables.find(_pc())
        if seq is not None:
            print(
                "rseq: stopped inside the restartable sequence %s; a stop there usually "
                "aborts the attempt, the next stepping command runs it to its commit"
                % _describe(seq)
            )
        return
    for _ in range(_MAX_ROUNDS):
        seq = _tables.find(_pc())
        if seq is None:
            return
        if run_to_commit(seq, quiet=command in ("step", "next")) is None:
            return
        if command not in ("step", "next", "nexti"):
            break
        if start_frame is not None and start_frame.is_valid():
            child = _child_of(start_frame)
            if child is not None and not _return_to(start_frame, child):
                return
        if command == "nexti":
            break
        if _at_new_line(start_frame):
            break
        # Go on with the step or next, from after the sequence. gdb does not run the
        # hooks of a command issued from its own hook, so arm the guards here.
        _state.last_stop = None
        _state.command = command
        _arm_guards()
        try:
            gdb.execute(command)
        finally:
            _disarm_guards()
            _state.command = None
        if _state.last_stop in ("breakpoint", "signal"):
            return
    _print_location(start_frame)


def _on_stop(event):
    if _state.busy:
        return
    if _state.command is None:
        # A stop outside the stepping commands (`continue`, `run`, `until`...).
        if isinstance(event, (gdb.BreakpointEvent, gdb.SignalEvent)) and _param.value:
            try:
                seq = _tables.find(_pc()) if _has_thread() else None
            except gdb.error:
                seq = None
            if seq is not None:
                print(
                    "rseq: stopped inside the restartable sequence %s; a stop there "
                    "usually aborts the attempt, the next stepping command runs it to "
                    "its commit"
                    % _describe(seq)
                )
        return
    if isinstance(event, gdb.SignalEvent):
        _state.last_stop = "signal"
    elif isinstance(event, gdb.BreakpointEvent):
        guards = set(_state.guards)
        if all(bp in guards for bp in event.breakpoints):
            _state.last_stop = "guard"
        else:
            _state.last_stop = "breakpoint"
    else:
        _state.last_stop = "step"


def _on_prompt():
    # Safety net: a stepping command that failed skips its post hook; never leave
    # guards behind for a `continue`.
    if _state.guards and not _state.busy:
        _disarm_guards()
        _state.command = None


class _InfoRseq(gdb.Command):
    """List the restartable sequences (rseq) of the running program.

    Usage: info rseq
    Shows each critical section's start, post-commit and abort addresses, its exit
    points and the function it lies in, read from the tables `__rseq_cs`,
    `__rseq_cs_ptr_array` and `__rseq_exit_point_array` of every loaded object."""

    def __init__(self):
        super().__init__("info rseq", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        _tables.invalidate()
        seqs = _tables.sequences()
        for note in _tables.notes:
            print("rseq: " + note)
        if not _has_thread():
            print("The program is not being run: the rseq tables are read from its memory.")
            return
        if not seqs:
            print("No restartable sequences in the loaded objects.")
            return
        pc = _pc()
        print("%d restartable sequence%s:" % (len(seqs), "" if len(seqs) == 1 else "s"))
        print("  %-18s %-18s %-18s %s" % ("start", "post-commit", "abort", "function"))
        for seq in seqs:
            mark = "*" if seq.contains(pc) else " "
            print(
                "%s 0x%016x 0x%016x 0x%016x %s"
                % (mark, seq.start, seq.post_commit, seq.abort, _function_at(seq.start))
            )
            for exit_ip in seq.exits:
                print("    exit point 0x%016x %s" % (exit_ip, _function_at(exit_ip)))


def _function_at(addr):
    try:
        block = gdb.block_for_pc(addr)
        while block is not None and block.function is None:
            block = block.superblock
        if block is not None:
            return block.function.print_name
    except (gdb.error, RuntimeError):
        pass
    try:
        text = gdb.execute("info symbol 0x%x" % addr, to_string=True).strip()
        if not text.startswith("No symbol"):
            return text
    except gdb.error:
        pass
    return "??"


def _install():
    main = __import__("__main__")
    # Sourcing the file again replaces the previous copy's hooks and handlers.
    for event, handler in getattr(main, "_restartable_gdb_handlers", ()):
        try:
            event.disconnect(handler)
        except (ValueError, RuntimeError):
            pass
    for command in _HOOKED:
        gdb.execute(
            "define hook-%s\npython _restartable_gdb_before(%r)\nend" % (command, command)
        )
        gdb.execute(
            "define hookpost-%s\npython _restartable_gdb_after(%r)\nend"
            % (command, command)
        )
    handlers = (
        (gdb.events.stop, _on_stop),
        (gdb.events.new_objfile, _tables.invalidate),
        (gdb.events.clear_objfiles, _tables.invalidate),
        (gdb.events.exited, _tables.invalidate),
        (gdb.events.before_prompt, _on_prompt),
    )
    for event, handler in handlers:
        event.connect(handler)
    # The hooks call these through gdb's `python` command, in the __main__ namespace.
    main._restartable_gdb_handlers = handlers
    main._restartable_gdb_before = _before
    main._restartable_gdb_after = _after
    _InfoRseq()


_install()
