# restartable_lldb.py: make lldb step over Linux restartable sequences (rseq).
#
# Load it with `command script import restartable_lldb.py` (the `rseq lldb-script`
# command prints this file; keep the name: lldb names the module after the file)
# once a target exists (`lldb ./program`, or after `target create`), then use lldb
# as usual. `rseq` lists the sequences of the running program; `rseq off` / `rseq on`
# switch the stepping help off and on.
#
# The problem
# -----------
# A stop anywhere inside a restartable sequence (a single step, a breakpoint, one of
# the branch breakpoints lldb's stepping plans run between) makes the kernel abort
# that attempt when the thread resumes. Under `stepi`, or a `step` through the lines
# of an inlined sequence, every attempt is stopped, so the retry loop never commits:
# the program gets past it only through its fallback path, if it has one.
#
# What this module does
# ---------------------
# It reads the reference tables that librseq, the kernel selftests and the Rust
# `restartable` crate emit (`__rseq_cs`: 32-byte `struct rseq_cs` descriptors;
# `__rseq_cs_ptr_array`; `__rseq_exit_point_array`: (start_ip, exit_ip) pairs) from
# the process's memory, for the executable and every loaded shared library (also the
# ones loaded later by dlopen: the tables are read again at every stop when the list
# of modules changed). Then:
#
#   * Guards: a breakpoint (named `rseq-guard`) on each sequence's entry, the
#     `leaq descriptor(%rip)` two instructions before its start (the reference
#     layout, checked against the descriptor's address; the start itself otherwise).
#     When a thread reaches a guard while a stepping plan runs (`step`, `next`,
#     `thread step-in`...; found with `thread plan list`), the guard stops it there,
#     outside the sequence. Running freely (`continue`, `finish`), the first guard hit
#     switches all the guards off until the next stop: one trap, no abort.
#   * A stop hook: when the process stops at a guard or inside a sequence (a `stepi`
#     onto its start, a user breakpoint inside), it puts one-shot thread-specific
#     breakpoints (named `rseq-run`) on the post-commit address, the exit points and
#     the abort handler, switches off user breakpoints inside the sequence and the
#     guards, and lets the process continue: from a guard the attempt commits without
#     any abort; from inside it aborts once (that stop already doomed it) and the
#     retry commits. An exit point that is also on the retry path (the abort
#     handler jumps back to it) counts as the exit only if no abort came first.
#   * Finishing the step: when the run interrupted a source-level step (`step`,
#     `next`, `thread step-in`, `thread step-over`), the stop hook pushes a scripted
#     thread plan (`_FinishStep`) and lets the process go on, so that the one command
#     ends where lldb would have stopped: a `next` that met the sequence in a callee
#     steps out to the frame it started in, then over the rest of that line; a step
#     that stands inside a line after the commit (not at the start of a line-table
#     row) or still on the line it started from steps over (or into) the rest of
#     it. A commit at the start of a new line ends the step there. `stepi`, `nexti`,
#     a breakpoint inside a sequence and a free run are reported at the post-commit
#     address or the exit taken.
#
# What does not work (plainly)
# ----------------------------
#   * A step that ends through an exit point (not the commit) is finished the same
#     way, from the exit. The origin of a step is the frame selected at the stop
#     before it (its CFA): a step issued after `frame select` of an outer frame is
#     finished as if issued from frame 0.
#   * The guards and the run breakpoints are ordinary breakpoints (with the names
#     above): `breakpoint list` shows them, `breakpoint delete` without arguments
#     deletes them too (they come back at the next stop).
#   * Importing the module switches lldb's fast stepping off (`settings set
#     target.use-fast-stepping false`; `rseq off` switches it back on): its branch
#     breakpoints would stop inside sequences. Steps single-step instead: slower
#     through long lines, same stops.
#   * Threads: the guards serve the thread selected at the last stop. Other threads'
#     guard hits while it is stepped cost a trap each (no abort); past 1000 of them in
#     one command the guards are switched off.
#   * The stop hook belongs to the target that existed when the module was imported
#     (or the selected target at `rseq on`).
#   * x86_64 only (64-bit little-endian tables, the x86 entry layout).

import re
import struct

import lldb

RSEQ_CS_SIZE = 32
_RSEQ_SECTIONS = ("__rseq_cs", "__rseq_cs_ptr_array", "__rseq_exit_point_array")
_GUARD_NAME = "rseq-guard"
# Guard hits by threads running freely (not the selected one) tolerated per command
# before the guards are switched off.
_OTHER_THREAD_BUDGET = 1000
_RUN_NAME = "rseq-run"
_RIP_RE = re.compile(r"\[?\s*0x([0-9a-fA-F]+)\s*\(\s*%rip\s*\)|rip\s*\+\s*0x([0-9a-fA-F]+)")


class Sequence:
    """One restartable sequence: [start, post_commit), its abort handler and exits."""

    def __init__(self, start, post_commit, abort, descriptor, module):
        self.start = start
        self.post_commit = post_commit
        self.abort = abort
        self.exits = []
        self.descriptor = descriptor
        self.module = module
        self.entry = None

    def contains(self, pc):
        return self.start <= pc < self.post_commit


class _State:
    def __init__(self):
        self.enabled = True
        self.sequences = None
        self.modules = None  # the module list the sequences were read from
        self.notes = []
        self.guards = {}  # address -> breakpoint id
        self.run = None  # the run to a commit in progress (a dict)
        self.hooked_targets = set()
        self.last_thread = None  # the selected thread at the last stop
        # Where the user's last command started: (thread id, CFA of frame 0, file,
        # line), kept while a step goes on after a sequence's commit.
        self.origin = None
        self.finish = None  # what _FinishStep is to do (a dict)
        self.other_hits = 0
        self.commits = 0  # runs that reached a commit or an exit (read by the tests)


_state = globals().get("_state") or _State()


def _walk_sections(section):
    yield section
    for i in range(section.GetNumSubSections()):
        yield from _walk_sections(section.GetSubSectionAtIndex(i))


def _module_key(target):
    return tuple(
        (m.GetFileSpec().fullpath, m.GetObjectFileHeaderAddress().GetLoadAddress(target))
        for m in target.module_iter()
    )


def read_sequences(target):
    """All the sequences of `target`'s loaded modules (cached per module list)."""
    key = _module_key(target)
    if _state.sequences is not None and _state.modules == key:
        return _state.sequences
    process = target.GetProcess()
    found = []
    notes = []
    for module in target.module_iter():
        sections = {}
        for top in module.section_iter():
            for sec in _walk_sections(top):
                if sec.GetName() in _RSEQ_SECTIONS:
                    addr = sec.GetLoadAddress(target)
                    if addr != lldb.LLDB_INVALID_ADDRESS:
                        sections[sec.GetName()] = (addr, addr + sec.GetByteSize())
        if not sections:
            continue
        where = module.GetFileSpec().fullpath or module.GetFileSpec().GetFilename()
        try:
            found.extend(_read_module(process, where, sections, notes))
        except (ValueError, struct.error) as err:
            notes.append("%s: cannot read the rseq tables: %s" % (where, err))
    found.sort(key=lambda s: (s.start, s.post_commit))
    _state.notes = notes
    # Not kept when a table could not be read whole (a library being loaded).
    if not notes:
        _state.sequences = found
        _state.modules = key
    return found


def _read(process, lo, hi):
    if hi <= lo:
        return b""
    error = lldb.SBError()
    data = process.ReadMemory(lo, hi - lo, error)
    if not error.Success():
        raise ValueError("reading 0x%x: %s" % (lo, error.GetCString()))
    return bytes(data)


def _read_module(process, where, sections, notes):
    descriptors = set()
    if "__rseq_cs_ptr_array" in sections:
        data = _read(process, *sections["__rseq_cs_ptr_array"])
        for (ptr,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8]):
            if ptr:
                descriptors.add(ptr)
    if "__rseq_cs" in sections:
        lo, hi = sections["__rseq_cs"]
        addr = (lo + RSEQ_CS_SIZE - 1) // RSEQ_CS_SIZE * RSEQ_CS_SIZE
        while addr + RSEQ_CS_SIZE <= hi:
            _v, _f, start, offset, _abort = struct.unpack(
                "<IIQQQ", _read(process, addr, addr + RSEQ_CS_SIZE)
            )
            if start and offset:
                descriptors.add(addr)
            elif offset and not start:
                notes.append("%s: descriptor at 0x%x is not relocated yet" % (where, addr))
            addr += RSEQ_CS_SIZE
    seqs = {}
    for addr in sorted(descriptors):
        _v, _f, start, offset, abort = struct.unpack(
            "<IIQQQ", _read(process, addr, addr + RSEQ_CS_SIZE)
        )
        if start == 0 or offset == 0:
            notes.append("%s: descriptor at 0x%x is not relocated or empty" % (where, addr))
            continue
        seqs.setdefault(start, Sequence(start, start + offset, abort, addr, where))
    if "__rseq_exit_point_array" in sections:
        data = _read(process, *sections["__rseq_exit_point_array"])
        for start, exit_ip in struct.iter_unpack("<QQ", data[: len(data) // 16 * 16]):
            seq = seqs.get(start)
            if seq is not None and exit_ip not in seq.exits:
                seq.exits.append(exit_ip)
    return list(seqs.values())


def _find(target, pc):
    for seq in read_sequences(target):
        if seq.contains(pc):
            return seq
    return None


def _entry_of(target, seq):
    """The address of the `leaq descriptor(%rip)` / `movq %reg, 8(%area)` pair that
    enters `seq`, or its start if the pair is not there."""
    for mov_len in range(3, 9):
        for lea_len in (7, 8):
            at = seq.start - mov_len - lea_len
            insns = target.ReadInstructions(lldb.SBAddress(at, target), 2)
            if insns.GetSize() != 2:
                continue
            lea = insns.GetInstructionAtIndex(0)
            mov = insns.GetInstructionAtIndex(1)
            if lea.GetByteSize() != lea_len or mov.GetByteSize() != mov_len:
                continue
            if not lea.GetMnemonic(target).startswith("lea"):
                continue
            if not mov.GetMnemonic(target).startswith("mov"):
                continue
            m = _RIP_RE.search(lea.GetOperands(target))
            if m is None:
                continue
            disp = int(m.group(1) or m.group(2), 16)
            if at + lea_len + disp == seq.descriptor and "0x8(" in mov.GetOperands(target):
                return at
    return seq.start


def _guard_hit(frame, bp_loc, extra_args, internal_dict):
    """Breakpoint callback of the guards: stop only a thread that is being stepped."""
    if not _state.enabled or _state.run is not None:
        return False
    thread = frame.GetThread()
    target = thread.GetProcess().GetTarget()
    interp = target.GetDebugger().GetCommandInterpreter()
    result = lldb.SBCommandReturnObject()
    interp.HandleCommand("thread plan list %d" % thread.GetIndexID(), result)
    active = result.GetOutput().split("Completed plan stack")[0]
    if "Element 1:" in active:
        return True
    # Running freely: switch the guards off until the next stop. Another thread than
    # the selected one may run freely while that one is stepped: its hits cost a trap
    # each, no abort, and switch the guards off only past a budget.
    if thread.GetThreadID() != _state.last_thread and frame.GetPC() not in _start_guards():
        _state.other_hits += 1
        if _state.other_hits <= _OTHER_THREAD_BUDGET:
            return False
    for bp_id in _state.guards.values():
        bp = target.FindBreakpointByID(bp_id)
        if bp.IsValid():
            bp.SetEnabled(False)
    seq = _find(target, frame.GetPC())
    # A guard on a start has already doomed this attempt: stop, so that it is run to
    # its commit.
    return seq is not None and frame.GetPC() == seq.start


def _start_guards():
    seqs = _state.sequences or []
    return {s.start for s in seqs if s.entry is not None and s.entry != s.start}


def _arm_guards(target, thread, origin=True):
    """Guards on the entries of all sequences, enabled (the process is stopped).
    `origin`: this stop is where the user's next command starts."""
    _state.last_thread = thread.GetThreadID() if thread.IsValid() else None
    if origin:
        _state.origin = None
        if thread.IsValid():
            frame = thread.GetFrameAtIndex(0)
            entry = frame.GetLineEntry()
            _state.origin = (
                thread.GetThreadID(),
                frame.GetCFA(),
                entry.GetFileSpec().fullpath,
                entry.GetLine(),
            )
    _state.other_hits = 0
    wanted = {}
    pc = thread.GetFrameAtIndex(0).GetPC() if thread.IsValid() else None
    for seq in read_sequences(target):
        if seq.entry is None:
            seq.entry = _entry_of(target, seq)
        wanted[seq.entry] = seq
        # lldb steps over a breakpoint under the pc: a thread standing on the entry
        # or the `movq` gets a guard on the start too.
        if pc is not None and seq.entry <= pc < seq.start:
            wanted[seq.start] = seq
    for addr, bp_id in list(_state.guards.items()):
        bp = target.FindBreakpointByID(bp_id)
        if addr not in wanted or not bp.IsValid():
            if bp.IsValid():
                target.BreakpointDelete(bp_id)
            del _state.guards[addr]
    for addr in wanted:
        bp_id = _state.guards.get(addr)
        if bp_id is not None:
            target.FindBreakpointByID(bp_id).SetEnabled(True)
            continue
        bp = target.BreakpointCreateByAddress(addr)
        bp.AddName(_GUARD_NAME)
        bp.SetScriptCallbackFunction("restartable_lldb._guard_hit")
        _state.guards[addr] = bp.GetID()


def _disarm_guards(target):
    for bp_id in _state.guards.values():
        bp = target.FindBreakpointByID(bp_id)
        if bp.IsValid():
            target.BreakpointDelete(bp_id)
    _state.guards = {}


def _bp_addresses(bp):
    return [
        bp.GetLocationAtIndex(i).GetLoadAddress()
        for i in range(bp.GetNumLocations())
        if bp.GetLocationAtIndex(i).IsEnabled()
    ]


def _start_run(target, thread, seq, stream):
    """Prepare the run of `thread` to the commit of `seq`; the caller continues."""
    guard_ids = set(_state.guards.values())
    paused = []
    for bp in target.breakpoint_iter():
        if bp.GetID() in guard_ids:
            if bp.IsEnabled():
                bp.SetEnabled(False)
            continue
        if bp.IsEnabled() and any(seq.contains(a) for a in _bp_addresses(bp)):
            bp.SetEnabled(False)
            paused.append(bp.GetID())
    temps = {}
    for addr, kind in [(seq.post_commit, "post-commit"), (seq.abort, "abort")] + [
        (e, "exit point") for e in seq.exits
    ]:
        if addr in temps:
            continue
        bp = target.BreakpointCreateByAddress(addr)
        bp.AddName(_RUN_NAME)
        bp.SetThreadID(thread.GetThreadID())
        temps[addr] = (bp.GetID(), kind)
    _state.run = {
        "seq": seq,
        "thread": thread.GetThreadID(),
        "temps": temps,
        "paused": paused,
        "aborted": False,
        "rounds": 0,
        "step": None,  # the kind of source-level step the run interrupted
    }


def _end_run(target):
    run, _state.run = _state.run, None
    for bp_id, _kind in run["temps"].values():
        target.BreakpointDelete(bp_id)
    for bp_id in run["paused"]:
        bp = target.FindBreakpointByID(bp_id)
        if bp.IsValid():
            bp.SetEnabled(True)


def _discard_plans(thread):
    """Discard the thread's stepping plans (the base plan stays): the thread runs.
    Returns the kind of source-level step they made ("over", "in") or None."""
    interp = thread.GetProcess().GetTarget().GetDebugger().GetCommandInterpreter()
    result = lldb.SBCommandReturnObject()
    interp.HandleCommand("thread plan list %d" % thread.GetIndexID(), result)
    active = result.GetOutput().split("Completed plan stack")[0]
    kind = None
    if "Stepping over line" in active:
        kind = "over"
    elif "Stepping in through line" in active:
        kind = "in"
    if "Element 1:" in active:
        thread.GetProcess().SetSelectedThread(thread)
        interp.HandleCommand("thread plan discard 1", result)
        if not result.Succeeded():
            print("rseq: cannot discard the stepping plan: %s" % result.GetError())
    return kind


def _describe(seq):
    return "[0x%x, 0x%x) abort 0x%x" % (seq.start, seq.post_commit, seq.abort)


class StopHook:
    """The stop hook (`target stop-hook add -P restartable_lldb.StopHook`)."""

    def __init__(self, target, extra_args, internal_dict):
        self.target = target

    def handle_stop(self, exe_ctx, stream):
        try:
            return _handle_stop(exe_ctx, stream)
        except Exception as err:  # never leave the process stuck on our account
            stream.Print("rseq: %s\n" % err)
            return True


def _handle_stop(exe_ctx, stream):
    target = exe_ctx.GetTarget()
    process = exe_ctx.GetProcess()
    if not process.IsValid() or process.GetState() != lldb.eStateStopped:
        return True
    if not _state.enabled:
        if _state.guards:
            _disarm_guards(target)
        return True
    run = _state.run
    if run is not None:
        thread = process.GetThreadByID(run["thread"])
        pc = thread.GetFrameAtIndex(0).GetPC() if thread.IsValid() else None
        hit = run["temps"].get(pc)
        if hit is None or process.GetSelectedThread().GetThreadID() != run["thread"]:
            # Stopped elsewhere (another breakpoint, a signal, another thread).
            seq = run["seq"]
            _end_run(target)
            stream.Print(
                "rseq: stopped at 0x%x before the sequence %s committed (%s)\n"
                % (pc or 0, _describe(seq), thread.GetStopDescription(100))
            )
            _arm_guards(target, process.GetSelectedThread())
            return True
        kind = hit[1]
        run["rounds"] += 1
        if kind == "abort" or (kind == "exit point" and run["aborted"]):
            # The abort path (an exit point merged with the retry path is passed once
            # after each abort): let the retry run.
            run["aborted"] = kind == "abort"
            if run["rounds"] < 1000:
                return False
        seq = run["seq"]
        step = run["step"]
        _end_run(target)
        _state.commits += 1
        stream.Print(
            "rseq: ran the restartable sequence %s to its %s 0x%x\n"
            % (_describe(seq), kind, pc)
        )
        if step is not None and _finish_step(thread, step, stream):
            # The step goes on from here: the guards serve it, its start stays.
            _arm_guards(target, thread, origin=False)
            return False
        _arm_guards(target, thread)
        return True
    thread = exe_ctx.GetThread()
    if not thread.IsValid():
        return True
    pc = thread.GetFrameAtIndex(0).GetPC()
    reason = thread.GetStopReason()
    at_guard = False
    if reason == lldb.eStopReasonBreakpoint:
        bp_id = thread.GetStopReasonDataAtIndex(0)
        at_guard = bp_id in _state.guards.values() and pc in _state.guards
    seq = None
    if at_guard:
        for s in read_sequences(target):
            if s.entry is None:  # the tables were read again (`rseq` does)
                s.entry = _entry_of(target, s)
            if s.entry == pc or s.start == pc:
                seq = s
                break
    else:
        seq = _find(target, pc)
        if seq is not None and reason == lldb.eStopReasonSignal:
            stream.Print(
                "rseq: stopped by a signal inside the restartable sequence %s; it "
                "aborts when the thread resumes\n" % _describe(seq)
            )
            seq = None
    if seq is None:
        _arm_guards(target, thread)
        return True
    _start_run(target, thread, seq, stream)
    # The process goes on as after `continue`, with the thread's plans as they are:
    # a stepping plan interrupted at the guard would single-step on into the sequence.
    _state.run["step"] = _discard_plans(thread)
    return False


def _finish_step(thread, step, stream):
    """After a run to a commit on behalf of a source-level step of kind `step` ("over"
    or "in"): if the thread does not stand where that step would have stopped, push
    a `_FinishStep` plan that ends it (the caller lets the process go on). Returns
    whether it did."""
    origin = _state.origin
    depth = None  # the index of the frame the step started in, if still there
    if origin is not None and origin[0] == thread.GetThreadID():
        for i in range(thread.GetNumFrames()):
            if thread.GetFrameAtIndex(i).GetCFA() == origin[1]:
                depth = i
                break
    frame = thread.GetFrameAtIndex(0)
    entry = frame.GetLineEntry()
    if step == "over" and depth is not None and depth > 0:
        plan = {"out_to": depth, "kind": "over"}
    elif not entry.IsValid():
        return False  # no line table here: nowhere to step to
    elif (
        entry.GetLine() != 0  # a compiler-made row (line 0) is no line: step on
        and entry.GetStartAddress().GetLoadAddress(thread.GetProcess().GetTarget())
        == frame.GetPC()
        and not (
            depth == 0
            and origin is not None
            and (entry.GetFileSpec().fullpath, entry.GetLine()) == (origin[2], origin[3])
        )
    ):
        return False  # at the start of a new line: where the step stops
    else:
        plan = {"out_to": None, "kind": step}
    _state.finish = plan
    error = thread.StepUsingScriptedThreadPlan("restartable_lldb._FinishStep", False)
    if not error.Success():
        _state.finish = None
        stream.Print("rseq: cannot finish the step: %s\n" % error.GetCString())
        return False
    return True


class _FinishStep:
    """A scripted thread plan that ends a source-level step interrupted by a run to a
    sequence's commit: out to the frame the step started in (`next` that met the
    sequence in a callee), then a step over (or into) the rest of the current line."""

    def __init__(self, thread_plan, args_data, internal_dict):
        self.thread_plan = thread_plan
        todo, _state.finish = _state.finish or {"out_to": None, "kind": "over"}, None
        self.kind = todo["kind"]
        if todo["out_to"]:
            # Out of the frame below the one the step started in.
            self.child = thread_plan.QueueThreadPlanForStepOut(todo["out_to"] - 1, False)
            self.stepped_out = False
        else:
            self.stepped_out = True
            self.child = self._queue_line_step()

    def _queue_line_step(self):
        thread = self.thread_plan.GetThread()
        frame = thread.GetFrameAtIndex(0)
        entry = frame.GetLineEntry()
        target = thread.GetProcess().GetTarget()
        start = entry.GetStartAddress().GetLoadAddress(target)
        end = entry.GetEndAddress().GetLoadAddress(target)
        if not entry.IsValid() or not start <= frame.GetPC() < end:
            return None
        # lldb extends the range over the line's other rows itself.
        address = lldb.SBAddress(start, target)
        if self.kind == "in":
            return self.thread_plan.QueueThreadPlanForStepInRange(address, end - start)
        return self.thread_plan.QueueThreadPlanForStepOverRange(address, end - start)

    def explains_stop(self, event):
        return False

    def should_stop(self, event):
        if self.child is not None and not self.child.IsPlanComplete():
            return False
        if not self.stepped_out:
            self.stepped_out = True
            self.child = self._queue_line_step()
            if self.child is not None:
                return False
        self.thread_plan.SetPlanComplete(True)
        return True

    def should_step(self):
        return False

    def is_stale(self):
        return False


class _RseqCommand:
    """rseq [list|on|off]: list the restartable sequences of the running program
    (start, post-commit, abort, exit points, function, module), or switch the
    stepping help on or off."""

    def __init__(self, debugger, internal_dict):
        pass

    def get_short_help(self):
        return "List restartable sequences (rseq); 'rseq on|off' switches the stepping help."

    def get_long_help(self):
        return self.__doc__

    def __call__(self, debugger, command, exe_ctx, result):
        arg = command.strip()
        target = exe_ctx.GetTarget()
        if arg in ("on", "off"):
            _state.enabled = arg == "on"
            _fast_stepping(debugger, not _state.enabled)
            if _state.enabled and target.IsValid():
                _install_stop_hook(debugger, target)
            if not _state.enabled and target.IsValid():
                _disarm_guards(target)
            result.AppendMessage("rseq stepping help is %s." % arg)
            return
        if arg not in ("", "list"):
            result.SetError("usage: rseq [list|on|off]")
            return
        process = exe_ctx.GetProcess()
        if not process.IsValid() or process.GetState() != lldb.eStateStopped:
            result.AppendMessage(
                "The program is not stopped: the rseq tables are read from its memory."
            )
            return
        _state.sequences = None
        seqs = read_sequences(target)
        for note in _state.notes:
            result.AppendMessage("rseq: " + note)
        if not seqs:
            result.AppendMessage("No restartable sequences in the loaded modules.")
            return
        pc = exe_ctx.GetThread().GetFrameAtIndex(0).GetPC() if exe_ctx.GetThread().IsValid() else 0
        lines = [
            "%d restartable sequence%s:" % (len(seqs), "" if len(seqs) == 1 else "s"),
            "  %-18s %-18s %-18s %s" % ("start", "post-commit", "abort", "function"),
        ]
        for seq in seqs:
            lines.append(
                "%s 0x%016x 0x%016x 0x%016x %s  [%s]"
                % (
                    "*" if seq.contains(pc) else " ",
                    seq.start,
                    seq.post_commit,
                    seq.abort,
                    _function_at(target, seq.start),
                    seq.module,
                )
            )
            for exit_ip in seq.exits:
                lines.append(
                    "    exit point 0x%016x %s" % (exit_ip, _function_at(target, exit_ip))
                )
        result.AppendMessage("\n".join(lines))


def _function_at(target, addr):
    ctx = target.ResolveSymbolContextForAddress(
        lldb.SBAddress(addr, target), lldb.eSymbolContextFunction | lldb.eSymbolContextSymbol
    )
    if ctx.GetFunction().IsValid():
        return ctx.GetFunction().GetDisplayName() or ctx.GetFunction().GetName()
    if ctx.GetSymbol().IsValid():
        return ctx.GetSymbol().GetDisplayName() or ctx.GetSymbol().GetName()
    return "??"


def _install_stop_hook(debugger, target):
    key = target.GetExecutable().fullpath
    if key in _state.hooked_targets:
        return
    result = lldb.SBCommandReturnObject()
    debugger.GetCommandInterpreter().HandleCommand(
        "target stop-hook add -P restartable_lldb.StopHook", result
    )
    if result.Succeeded():
        _state.hooked_targets.add(key)
    else:
        print("rseq: cannot add the stop hook: %s" % result.GetError())


def _fast_stepping(debugger, on):
    # lldb's fast stepping runs a step from branch to branch with breakpoints on the
    # branches: inside a sequence those stop and abort it, and a plan's branch
    # breakpoint outlives the plan when the stop hook discards it. Without it, steps
    # advance one instruction at a time and stop at the guards.
    debugger.HandleCommand(
        "settings set target.use-fast-stepping %s" % ("true" if on else "false")
    )


def __lldb_init_module(debugger, internal_dict):
    debugger.HandleCommand("command script add -o -c restartable_lldb._RseqCommand rseq")
    _fast_stepping(debugger, False)
    target = debugger.GetSelectedTarget()
    if target.IsValid():
        _install_stop_hook(debugger, target)
    else:
        print(
            "rseq: no target yet: run `rseq on` after creating one to add the stop hook"
        )
