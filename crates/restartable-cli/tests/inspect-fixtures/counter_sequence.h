/*
 * The hand-written restartable sequence shared by the debugger and `rseq inspect`
 * fixtures (one_sequence.c, dlopen_sequence.c), in the reference layout (librseq, the
 * kernel selftests): a per-CPU counter increment with a compare-fail exit.
 *
 * COUNTER_INC_SEQUENCE(rs_, base_, limit_, abort, full, start, post_commit, abort_ip)
 *   rs_:    the thread's struct rseq (char *)
 *   base_:  an array of 64-byte per-CPU slots whose first word is the counter
 *   limit_: the compare-fail exit (jumps to the C label `full`) when the counter is at it
 *   abort, full: C labels in the caller (asm goto)
 *   start, post_commit, abort_ip: extra assembler text put before the sequence's
 *     start, post-commit and abort addresses (symbol definitions, or "")
 *
 * Its descriptor is in __rseq_cs, listed in __rseq_cs_ptr_array, and the compare-fail
 * exit in __rseq_exit_point_array, as the reference library lays them out.
 */
#ifndef COUNTER_SEQUENCE_H
#define COUNTER_SEQUENCE_H

#define COUNTER_INC_SEQUENCE(rs_, base_, limit_, abort, full, start, post_commit, abort_ip) \
	__asm__ goto(".pushsection __rseq_cs, \"aw\"\n\t"                              \
		     ".balign 32\n\t"                                                 \
		     "3:\n\t"                                                         \
		     ".long 0, 0\n\t"                                                 \
		     ".quad 1f, (2f-1f), 4f\n\t"                                      \
		     ".popsection\n\t"                                                \
		     ".pushsection __rseq_cs_ptr_array, \"aw\"\n\t"                   \
		     ".quad 3b\n\t"                                                   \
		     ".popsection\n\t"                                                \
		     ".pushsection __rseq_exit_point_array, \"aw\"\n\t"               \
		     ".quad 1f, %l[" #full "]\n\t"                                    \
		     ".popsection\n\t"                                                \
		     /* rseq_cs (offset 8 of struct rseq) = &descriptor */            \
		     "leaq 3b(%%rip), %%rax\n\t"                                      \
		     "movq %%rax, 8(%[rs])\n\t"                                       \
		     start                                                            \
		     "1:\n\t"                                                         \
		     /* cpu_id (offset 4) indexes the counters */                     \
		     "movl 4(%[rs]), %%eax\n\t"                                       \
		     "shlq $6, %%rax\n\t"                                             \
		     "movq (%[base],%%rax), %%rcx\n\t"                                \
		     "cmpq %[limit], %%rcx\n\t"                                       \
		     "jae %l[" #full "]\n\t"                                          \
		     "addq $1, %%rcx\n\t"                                             \
		     /* the commit */                                                 \
		     "movq %%rcx, (%[base],%%rax)\n\t"                                \
		     post_commit                                                      \
		     "2:\n\t"                                                         \
		     ".pushsection __rseq_failure, \"ax\"\n\t"                        \
		     ".byte 0x0f, 0xb9, 0x3d\n\t"                                     \
		     ".long 0x53053053\n\t"                                           \
		     abort_ip                                                         \
		     "4:\n\t"                                                         \
		     "jmp %l[" #abort "]\n\t"                                         \
		     ".popsection\n\t"                                                \
		     :                                                                \
		     : [rs] "r"(rs_), [base] "r"(base_), [limit] "r"(limit_)             \
		     : "rax", "rcx", "memory", "cc"                                   \
		     : abort, full)

#endif
