/*
 * Restartable-sequence tables with deliberate mistakes, one per function, for the
 * checks of `rseq inspect`. Nothing here is ever run: main returns at once.
 *
 *   good_seq          a correct sequence with an exit point (no problem)
 *   unlisted_seq      its descriptor is missing from __rseq_cs_ptr_array
 *   bad_version_seq   version 1 and flags 4
 *   no_signature_seq  no 0x53053053 signature before the abort handler
 *   abort_inside_seq  the abort handler is inside the critical section
 *   empty_seq         post_commit_offset 0
 *   exit_inside_seq   an exit point inside the critical section
 * and, belonging to no sequence: an exit point whose start_ip starts no sequence,
 * and a pointer-array entry that lands outside any section.
 */
__asm__(
	".macro rseq_desc label, version, flags, start, end, abort\n"
	"  .pushsection __rseq_cs, \"aw\"\n"
	"  .balign 32\n"
	"\\label:\n"
	"  .long \\version, \\flags\n"
	"  .quad \\start, \\end - \\start, \\abort\n"
	"  .popsection\n"
	".endm\n"
	".macro rseq_ptr target\n"
	"  .pushsection __rseq_cs_ptr_array, \"aw\"\n"
	"  .quad \\target\n"
	"  .popsection\n"
	".endm\n"
	".macro rseq_exit start, exit\n"
	"  .pushsection __rseq_exit_point_array, \"aw\"\n"
	"  .quad \\start, \\exit\n"
	"  .popsection\n"
	".endm\n"
	".macro rseq_fn name\n"
	"  .text\n"
	"  .globl \\name\n"
	"  .type \\name, @function\n"
	"\\name:\n"
	".endm\n"
	".macro rseq_sig\n"
	"  .byte 0x0f, 0xb9, 0x3d\n"
	"  .long 0x53053053\n"
	".endm\n"

	"rseq_fn good_seq\n"
	"good_start: nop\n nop\n"
	"good_end: ret\n"
	"good_exit: ret\n"
	"rseq_sig\n"
	"good_abort: ret\n"
	".size good_seq, .-good_seq\n"
	"rseq_desc good_cs, 0, 0, good_start, good_end, good_abort\n"
	"rseq_ptr good_cs\n"
	"rseq_exit good_start, good_exit\n"

	"rseq_fn unlisted_seq\n"
	"unlisted_start: nop\n"
	"unlisted_end: ret\n"
	"rseq_sig\n"
	"unlisted_abort: ret\n"
	".size unlisted_seq, .-unlisted_seq\n"
	"rseq_desc unlisted_cs, 0, 0, unlisted_start, unlisted_end, unlisted_abort\n"

	"rseq_fn bad_version_seq\n"
	"bad_version_start: nop\n"
	"bad_version_end: ret\n"
	"rseq_sig\n"
	"bad_version_abort: ret\n"
	".size bad_version_seq, .-bad_version_seq\n"
	"rseq_desc bad_version_cs, 1, 4, bad_version_start, bad_version_end, bad_version_abort\n"
	"rseq_ptr bad_version_cs\n"

	"rseq_fn no_signature_seq\n"
	"no_signature_start: nop\n"
	"no_signature_end: ret\n"
	".long 0x12345678\n"
	"no_signature_abort: ret\n"
	".size no_signature_seq, .-no_signature_seq\n"
	"rseq_desc no_signature_cs, 0, 0, no_signature_start, no_signature_end, no_signature_abort\n"
	"rseq_ptr no_signature_cs\n"

	"rseq_fn abort_inside_seq\n"
	"abort_inside_start: nop\n"
	"rseq_sig\n"
	"abort_inside_abort: nop\n"
	"abort_inside_end: ret\n"
	".size abort_inside_seq, .-abort_inside_seq\n"
	"rseq_desc abort_inside_cs, 0, 0, abort_inside_start, abort_inside_end, abort_inside_abort\n"
	"rseq_ptr abort_inside_cs\n"

	"rseq_fn empty_seq\n"
	"empty_start: ret\n"
	"rseq_sig\n"
	"empty_abort: ret\n"
	".size empty_seq, .-empty_seq\n"
	"rseq_desc empty_cs, 0, 0, empty_start, empty_start, empty_abort\n"
	"rseq_ptr empty_cs\n"

	"rseq_fn exit_inside_seq\n"
	"exit_inside_start: nop\n"
	"exit_inside_middle: nop\n"
	"exit_inside_end: ret\n"
	"rseq_sig\n"
	"exit_inside_abort: ret\n"
	".size exit_inside_seq, .-exit_inside_seq\n"
	"rseq_desc exit_inside_cs, 0, 0, exit_inside_start, exit_inside_end, exit_inside_abort\n"
	"rseq_ptr exit_inside_cs\n"
	"rseq_exit exit_inside_start, exit_inside_middle\n"

	"rseq_exit 0x1234, 0x5678\n"
	"rseq_ptr 0x7777770\n"
	".text\n");

int main(void)
{
	return 0;
}
