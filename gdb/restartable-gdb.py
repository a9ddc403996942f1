# restartable-gdb.py: make gdb step over Linux restartable sequences (rseq), from every
# front end: the command line (`step`, `next`, `stepi`, `nexti`, `until`, `finish`...)
# and the machine interface IDEs use (`-exec-next`, `-exec-step`,
# `-exec-step-instruction`, `-exec-next-instruction`...).
#
# Load it with `source restartable-gdb.py` (the `rseq gdb-script` command prints this
# file), then use gdb as usual.
#
# The problem
# -----------
# A stop anywhere inside a restartable sequence (a single step, a breakpoint) makes
# the kernel abort that attempt when the thread resumes: the instruction pointer is
# moved to the abort handler, which jumps back to retry. Under single-stepping every
# attempt is stopped, so the retry loop never commits: `stepi` and `next` never get
# past it, or get past it only through the program's fallback path.
#
# What this extension does
# ------------------------
# It reads the reference tables that the C library librseq, the kernel selftests and
# the Rust `restartable` crate emit (section `__rseq_cs`: 32-byte `struct rseq_cs`
# descriptors; `__rseq_cs_ptr_array`: one pointer per descriptor;
# `__rseq_exit_point_array`: (start_ip, exit_ip) pairs) from the inferior's memory,
# after the dynamic loader relocated them, for the executable and every shared library
# loaded (also later, with dlopen). It hooks no command: everything happens in gdb's
# stop event, which every front end goes through.
#
#   * Guards. While the program is stopped, an internal breakpoint sits on the entry of
#     every sequence: the `leaq descriptor(%rip)` two instructions before the
#     sequence's start (the reference layout: load the descriptor's address, store it
#     into the thread's `rseq_cs`, start), found by decoding backwards and checked
#     against the descriptor's address. A stop there is outside the critical section,
#     so it costs the sequence nothing. When a thread reaches a guard by
#     single-stepping (gdb's `step`, `next`, `until` step through a line one
#     instruction at a time), the guard stops the command; the extension runs the
#     thread to the sequence's post-commit address or one of its exit points (below)
#     -- the attempt commits, nothing aborts -- and then goes on with `next` unless the
#     thread already stands at the start of a new line, so the command ends on the
#     next line as it would without rseq. When a thread reaches a guard running freely
#     (`continue`, `finish`, `until LOCATION`, `advance`, `next` running over a call),
#     every guard is switched off until the program stops again: one trap for the
#     whole command, and no abort.
#   * A stop inside a sequence (a `stepi`/`nexti` that lands on its start, a
#     breakpoint a user placed inside) would abort the attempt anyway: the extension
#     runs the thread to the post-commit address or an exit point (the abort path and
#     the retry run without stops, and the next attempt commits), and reports the stop
#     there. Breakpoints inside the sequence, and one where the command began, are
#     switched off meanwhile. When an exit point is also on the retry path (compilers
#     merge the exit target with the loop head the abort handler jumps back to), a stop
#     there counts as the exit only if the thread's `rseq_cs` still points at the
#     descriptor (the kernel clears it when it aborts); the thread's rseq area comes
#     from PTRACE_GET_RSEQ_CONFIGURATION, or glibc's `__rseq_offset`.
#   * The thread is run with `continue` and internal thread-specific breakpoints, from
#     inside the stop event: a front end sees the first stop, then `*running` and a
#     final `*stopped` record with the frame (reason "end-stepping-range" when the
#     extension finished the step with `next`, "breakpoint-hit" with a negative
#     breakpoint number when it stopped at the post-commit address itself). It runs
#     synchronously, so commands a front end sends after the first `*stopped` are read
#     once the thread is where it will stay.
#
# Commands added: `info rseq` (list the sequences of the running program) and the
# setting `set rseq-step on|off` (default on; off restores gdb's plain behaviour).
# No command hook is defined, so user-defined `hook-next` etc. stay as they are.
#
# What does not work (plainly)
# ----------------------------
#   * A stop inside a sequence costs that attempt one abort (the kernel's doing, not
#     avoidable once the thread stopped there); the retry commits. Only stops at the
#     guards cost nothing.
#   * A sequence whose entry is not the reference `leaq`/`movq` pair gets its guard on
#     its start: single-stepping into it costs one abort, and a thread running freely
#     into it stops the command there (the extension runs it to its commit and then
#     goes on with `continue`, whatever the command was).
#   * Stepping a line where a call runs freely (`next` over a call) and a sequence
#     follows in the same line: the call's sequences switch the guards off, so the
#     sequence after it is single-stepped as without the extension.
#   * A count (`next 3`, `stepi 100`) is cut short when a sequence is met: the command
#     ends at the next line or the post-commit address. After a sequence the rest of
#     a `step`ped line is stepped with `next` (a call later in that line is stepped
#     over, not into).
#   * A `stepi`/`nexti` that lands on a guard stops there (it is outside the
#     sequence). A `continue` from a user breakpoint on the instruction right before a
#     guard is taken for such a `stepi` and stops at the guard.
#   * A stop inside a sequence caused by a signal is left alone (a note is printed).
#   * Threads: the guards serve the thread the user stopped in. Other threads run
#     while it is stepped (all-stop mode) or run to a commit; their guard hits cost a
#     trap each (no abort), and past 1000 of them in one command the guards are
#     switched off, so a step that meets a sequence after that is single-stepped as
#     without the extension.
#   * The tables are read from the running program's memory; before `run` `info rseq`
#     has nothing to show. Only x86_64 inferiors are supported (64-bit little-endian
#     tables, `$fs_base`), in all-stop mode.

import re
import struct

import gdb

RSEQ_CS_SIZE = 32
_SECTION_RE = re.compile(
    r"^\s*0x([0-9a-fA-F]+) - 0x([0-9a-fA-F]+) is (\S+)(?: in (.*))?$", re.M
)
_RSEQ_SECTIONS = ("__rseq_cs", "__rseq_cs_ptr_array", "__rseq_exit_point_array")
_MAX_ROUNDS = 1000


class Sequence:
    """One restartable sequence: [start, post_commit), its abort handler and exits."""

    __slots__ = ("start", "post_commit", "abort", "exits", "descriptor", "objfile", "entry")

    def __init__(self, start, post_commit, abort, descriptor, objfile):
        self.start = start
        self.post_commit = post_commit
        self.abort = abort
        self.exits = []
        self.descriptor = descriptor
        self.objfile = objfile
        # Where the guard goes: the `leaq` that loads the descriptor (or the start).
        self.entry = None

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
        """All the sequences, sorted by start address (empty if not running).

        Not kept when a table could not be read whole (a library being loaded: gdb
        reports it before its sections are placed and the dynamic loader relocates
        it): read again next time."""
        if self._sequences is None:
            found = self._read()
            if self.notes:
                return found
            self._sequences = found
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
                elif offset and not start:
                    self.notes.append(
                        "%s: descriptor at 0x%x is not relocated yet" % (where, addr)
                    )
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

# Guard hits by threads running freely (not the one the user stopped in) tolerated
# per command before the guards are switched off.
_OTHER_THREAD_BUDGET = 1000

# si_code of the SIGTRAP that stops a thread after a single step (a thread that runs
# into a breakpoint's int3 reports SI_KERNEL instead).
_TRAP_TRACE = 2


class _RseqStepParameter(gdb.Parameter):
    """Whether stops in and before restartable sequences run them to their commit."""

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
    """The guards, and where the program stood when it last stopped for the user."""

    def __init__(self):
        self.guards = {}  # entry address -> _Guard
        self.busy = False  # running a sequence to its commit: our own stops
        self.depth = 0  # nested stop handling (a `next` issued from the handler)
        self.last_pc = None  # where the current command began
        self.last_thread = None  # the thread the user stopped in (global number)
        self.other_hits = 0  # guard hits by other threads running freely
        self.last_frame = None
        self.last_line = None  # (line, file)


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


def _delete_all(bps):
    for bp in bps:
        try:
            if bp.is_valid():
                bp.delete()
        except (gdb.error, RuntimeError):
            pass


def _entry_of(seq, arch):
    """The address of the `leaq descriptor(%rip), %reg` / `movq %reg, %fs:8(%off)` pair
    that enters `seq` (the reference layout), or `seq.start` if it is not there."""
    for mov_len in range(3, 9):
        for lea_len in (7, 8):
            at = seq.start - mov_len - lea_len
            try:
                insns = arch.disassemble(at, count=2)
            except (gdb.error, gdb.MemoryError, ValueError):
                continue
            if len(insns) != 2:
                continue
            lea, mov = insns
            if (
                lea["length"] == lea_len
                and mov["length"] == mov_len
                and lea["asm"].startswith("lea")
                and "(%rip)" in lea["asm"]
                and lea["asm"].rstrip().endswith("# 0x%x" % seq.descriptor)
                and mov["asm"].startswith("mov")
                # `movq %reg, %fs:0x8(%off)` (the area by its offset from the thread
                # pointer) or `movq %reg, 0x8(%area)`.
                and (",0x8(" in mov["asm"].replace(" ", "") or ",%fs:0x8(" in mov["asm"].replace(" ", ""))
            ):
                return at
    return seq.start


class _Guard(gdb.Breakpoint):
    """An internal breakpoint on a sequence's entry (see the top of the file)."""

    def __init__(self, addr, seq):
        super().__init__("*0x%x" % addr, internal=True)
        self.silent = True
        self.seq = seq
        self.addr = addr

    def stop(self):
        if _state.busy or not _param.value:
            return False
        try:
            code = int(gdb.parse_and_eval("$_siginfo")["si_code"])
        except (gdb.error, RuntimeError):
            code = None
        if code == _TRAP_TRACE:
            return True
        # Running freely: the thread needs no help, and traps at the guards would only
        # slow it down. Switch them all off until the program stops for the user (all
        # threads are stopped while gdb asks this; gdb 13 allows it, although its
        # manual asks stop methods not to change breakpoints). Another thread than the
        # one the user stopped in may run freely while that one is stepped: its hits
        # cost a trap each, no abort, and switch the guards off only past a budget.
        # A guard on a sequence's start has already doomed this attempt: stop, so that
        # it is run to its commit.
        try:
            other = gdb.selected_thread().global_num != _state.last_thread
        except (gdb.error, AttributeError):
            other = False
        if other and self.addr != self.seq.start:
            _state.other_hits += 1
            if _state.other_hits <= _OTHER_THREAD_BUDGET:
                return False
        for guard in list(_state.guards.values()):
            try:
                guard.enabled = False
            except (gdb.error, RuntimeError):
                pass
        return self.addr == self.seq.start


# Entry addresses found, by (start, descriptor): kept across table reads.
_entries = {}


def _arm_guards():
    """Guards on the entries of all sequences, enabled (the program is stopped)."""
    if not _param.value or not _has_thread():
        _disarm_guards()
        return
    try:
        arch = gdb.selected_frame().architecture()
    except gdb.error:
        return
    wanted = {}
    for seq in _tables.sequences():
        if seq.entry is None:
            key = (seq.start, seq.descriptor)
            if key not in _entries:
                _entries[key] = _entry_of(seq, arch)
            seq.entry = _entries[key]
        wanted[seq.entry] = seq
        # gdb steps over a breakpoint under the pc without a stop: a thread standing
        # on the entry or the `movq` (a breakpoint on the line of an inlined sequence
        # is often on its entry) gets a guard on the start too.
        if _state.last_pc is not None and seq.entry <= _state.last_pc < seq.start:
            wanted[seq.start] = seq
    for addr in list(_state.guards):
        guard = _state.guards[addr]
        if addr not in wanted or not guard.is_valid() or guard.seq is not wanted[addr]:
            _delete_all([guard])
            del _state.guards[addr]
    for addr, seq in wanted.items():
        guard = _state.guards.get(addr)
        if guard is None:
            try:
                guard = _state.guards[addr] = _Guard(addr, seq)
                if addr == seq.start and addr != seq.entry and _state.last_thread:
                    # Only for the thread standing on the entry.
                    guard.thread = _state.last_thread
            except (gdb.error, RuntimeError) as err:
                print("rseq: cannot guard the sequence %s: %s" % (_describe(seq), err))
        elif not guard.enabled:
            guard.enabled = True


def _disarm_guards():
    guards = list(_state.guards.values())
    _state.guards = {}
    _delete_all(guards)


def _bp_addresses(bp):
    try:
        return [int(loc.address) for loc in bp.locations if loc.enabled]
    except (AttributeError, gdb.error, RuntimeError):
        return []


def run_to_commit(seq, report=False):
    """Run the selected thread until `seq` commits or takes an exit point.

    With `report`, the breakpoint at the post-commit address is not silent: gdb
    reports the stop there (an MI front end gets a `*stopped` record with the frame).
    Returns "post-commit",
    "exit point" or None (stopped elsewhere: another breakpoint, a signal, the end).
    """
    thread = gdb.selected_thread()
    # Breakpoints inside the sequence would abort every retry, and one where the
    # command began (often the retry loop's head) would stop every retry: switch them
    # off while the thread runs. The guards too (an abort retries through the entry).
    paused = []
    for bp in gdb.breakpoints():
        addresses = _bp_addresses(bp)
        if bp.enabled and (
            any(seq.contains(a) for a in addresses) or _state.last_pc in addresses
        ):
            bp.enabled = False
            paused.append(bp)
    for guard in _state.guards.values():
        if guard.enabled:
            guard.enabled = False
    targets = [seq.post_commit] + [e for e in seq.exits if e != seq.post_commit]
    temps = []
    for addr in targets:
        bp = gdb.Breakpoint("*0x%x" % addr, internal=True)
        # Exit points can lie on the retry path: always silent.
        bp.silent = not (report and addr == seq.post_commit)
        bp.thread = thread.global_num
        temps.append(bp)
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
    if reached is None and _has_thread():
        print(
            "rseq: stopped at 0x%x before the sequence %s committed"
            % (_pc(), _describe(seq))
        )
    return reached


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


def _at_new_line(start_frame, start_line):
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
    return (sal.line, _symtab_name(sal)) != start_line


def _symtab_name(sal):
    return sal.symtab.filename if sal.symtab is not None else None


def _at_line_start(pc):
    sal = gdb.find_pc_line(pc)
    return sal.symtab is not None and sal.pc == pc and sal.line != 0


def _one_instruction_after(pc, before):
    """True if one instruction leads from `before` to `pc` (a `stepi` from there): the
    next one, or the target of a jump or a conditional branch."""
    if before is None:
        return False
    try:
        arch = gdb.selected_frame().architecture()
        insn = arch.disassemble(before, count=1)[0]
    except (gdb.error, gdb.MemoryError, IndexError):
        return False
    if before + insn["length"] == pc:
        return True
    m = _BRANCH_RE.match(insn["asm"])
    return m is not None and int(m.group(1), 16) == pc


_BRANCH_RE = re.compile(r"^(?:j[a-z]+|loop[a-z]*)\s+0x([0-9a-fA-F]+)")


def _remember_stop():
    """Record where the program stopped for the user: the next command starts there."""
    _state.last_pc = None
    _state.last_frame = None
    _state.last_line = None
    _state.last_thread = None
    _state.other_hits = 0
    try:
        if _has_thread():
            _state.last_thread = gdb.selected_thread().global_num
            _state.last_frame = gdb.selected_frame()
            _state.last_pc = _pc()
            sal = gdb.find_pc_line(_state.last_pc)
            _state.last_line = (sal.line, _symtab_name(sal))
    except gdb.error:
        pass


def _finish_step(printed=False):
    """After a sequence met while stepping a line: stop if the thread stands at the
    start of a new line, else go on with `next` (its own stop is handled again)."""
    if _at_new_line(_state.last_frame, _state.last_line):
        if not printed:
            _print_location(_state.last_frame)
        return
    # The line goes on: guard it again (running to the commit switched the guards off).
    _arm_guards()
    gdb.execute("next")


def _handle_stop(event):
    thread = gdb.selected_thread()
    pc = _pc()
    hit = getattr(event, "breakpoints", None) or []
    guards = set(_state.guards.values())
    if hit and all(bp in guards for bp in hit):
        seq = hit[0].seq
        stepi = _one_instruction_after(pc, _state.last_pc)
        if pc == seq.start:
            # A guard on the start (the entry is not the reference pair, or the
            # thread stood on the entry): a stop inside, which costs one abort.
            _report(run_to_commit(seq, report=True), thread, not stepi)
            return
        if stepi or _at_new_line(_state.last_frame, _state.last_line):
            # A `stepi` onto the entry, or a step that ends there anyway (the entry
            # starts a line): a stop outside the sequence, where asked.
            _print_location(_state.last_frame)
            return
        # A step through a line reached the sequence: run it to its commit without
        # stopping inside (nothing aborts), then finish the step.
        if run_to_commit(seq) is not None and gdb.selected_thread() == thread:
            _finish_step()
        return
    seq = _tables.find(pc)
    if seq is None:
        return
    if isinstance(event, gdb.SignalEvent):
        print(
            "rseq: stopped by a signal inside the restartable sequence %s; it aborts "
            "when the thread resumes" % _describe(seq)
        )
        return
    if hit:
        print(
            "rseq: a breakpoint inside the restartable sequence %s; running it to its "
            "commit" % _describe(seq)
        )
    _report(run_to_commit(seq, report=True), thread, False)


def _report(reached, thread, stepping):
    """After run_to_commit(report=True): finish a step through a line, or show where
    the thread stands (gdb reported the stop at the post-commit address already)."""
    if reached is None or gdb.selected_thread() != thread:
        return
    if stepping:
        _finish_step(printed=reached == "post-commit")
    elif reached != "post-commit":
        _print_location(_state.last_frame)


def _on_stop(event):
    if _state.busy:
        return
    if not _param.value:
        _disarm_guards()
        return
    _state.depth += 1
    try:
        if _has_thread():
            _handle_stop(event)
    except (gdb.error, RuntimeError) as err:
        print("rseq: %s" % err)
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            _remember_stop()
            try:
                _arm_guards()
            except (gdb.error, RuntimeError) as err:
                print("rseq: cannot place the guards: %s" % err)


def _on_new_objfile(event):
    # A library loaded (also by dlopen, while the program runs: gdb stops it for that
    # and all threads are stopped): read the tables again and guard its sequences,
    # unless a free run switched the guards off.
    _tables.invalidate()
    if not _param.value or not _has_thread() or _state.busy:
        return
    if _state.guards and not any(g.enabled for g in _state.guards.values()):
        return
    try:
        _arm_guards()
    except (gdb.error, RuntimeError):
        pass


def _on_exited(*_args):
    _tables.invalidate()
    _entries.clear()
    _disarm_guards()
    _state.last_pc = None
    _state.last_frame = None
    _state.last_line = None


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
                "%s 0x%016x 0x%016x 0x%016x %s  [%s]"
                % (
                    mark,
                    seq.start,
                    seq.post_commit,
                    seq.abort,
                    _function_at(seq.start),
                    seq.objfile,
                )
            )
            for exit_ip in seq.exits:
                print("    exit point 0x%016x %s" % (exit_ip, _function_at(exit_ip)))
        # The tables were read again: put the guards on the sequences just listed.
        _arm_guards()


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
    # Sourcing the file again replaces the previous copy's handlers.
    for event, handler in getattr(main, "_restartable_gdb_handlers", ()):
        try:
            event.disconnect(handler)
        except (ValueError, RuntimeError):
            pass
    old_disarm = getattr(main, "_restartable_gdb_disarm", None)
    if old_disarm is not None:
        old_disarm()
    handlers = (
        (gdb.events.stop, _on_stop),
        (gdb.events.new_objfile, _on_new_objfile),
        (gdb.events.clear_objfiles, _tables.invalidate),
        (gdb.events.exited, _on_exited),
    )
    for event, handler in handlers:
        event.connect(handler)
    main._restartable_gdb_handlers = handlers
    main._restartable_gdb_disarm = _disarm_guards
    _InfoRseq()
    # Loaded into a program already stopped: guard it now.
    if _has_thread():
        _remember_stop()
        _arm_guards()


_install()
