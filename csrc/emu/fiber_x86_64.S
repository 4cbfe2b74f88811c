/* fiber_x86_64.S: the emulator's fiber context switch for x86-64 System V (ELF): saves the
 * callee-saved registers, MXCSR and the x87 control word on the old stack, resumes the new one. */
#if defined(__x86_64__) && defined(__ELF__)

  .text

/* void cuattn_emu_fiber_switch(void** save_sp, void* resume_sp)
 *
 * Pushes rbp, rbx, r12-r15 and one 8-byte slot holding MXCSR (low 4 bytes) and the x87 control
 * word (next 2), stores rsp to *save_sp, loads resume_sp and pops the same frame from it. A fiber
 * that has never run holds a frame planted by runtime.cpp whose return address is
 * cuattn_emu_fiber_start. Caller-saved registers (rax, rcx among them) need no saving: this is
 * a real call. */
  .globl cuattn_emu_fiber_switch
  .hidden cuattn_emu_fiber_switch
  .type cuattn_emu_fiber_switch, @function
  .p2align 4
cuattn_emu_fiber_switch:
  .cfi_startproc
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  pushq %rbx
  .cfi_adjust_cfa_offset 8
  pushq %r12
  .cfi_adjust_cfa_offset 8
  pushq %r13
  .cfi_adjust_cfa_offset 8
  pushq %r14
  .cfi_adjust_cfa_offset 8
  pushq %r15
  .cfi_adjust_cfa_offset 8
  subq $8, %rsp
  .cfi_adjust_cfa_offset 8
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsp, %rax
  movq %rsi, %rsp
  /* Loading a control register costs more than comparing: load only what differs. */
  movl (%rsp), %ecx
  cmpl (%rax), %ecx
  je 1f
  ldmxcsr (%rsp)
1:
  movzwl 4(%rsp), %ecx
  cmpw 4(%rax), %cx
  je 2f
  fldcw 4(%rsp)
2:
  addq $8, %rsp
  .cfi_adjust_cfa_offset -8
  popq %r15
  .cfi_adjust_cfa_offset -8
  popq %r14
  .cfi_adjust_cfa_offset -8
  popq %r13
  .cfi_adjust_cfa_offset -8
  popq %r12
  .cfi_adjust_cfa_offset -8
  popq %rbx
  .cfi_adjust_cfa_offset -8
  popq %rbp
  .cfi_adjust_cfa_offset -8
  ret
  .cfi_endproc
  .size cuattn_emu_fiber_switch, .-cuattn_emu_fiber_switch

/* The first code a fiber runs, "returned to" from its planted frame with rsp 16-byte aligned:
 * r12 holds the entry function and r13 its argument. The entry never returns. */
  .globl cuattn_emu_fiber_start
  .hidden cuattn_emu_fiber_start
  .type cuattn_emu_fiber_start, @function
  .p2align 4
cuattn_emu_fiber_start:
  .cfi_startproc
  .cfi_undefined rip  /* the outermost frame of a fiber: debuggers stop unwinding here */
  movq %r13, %rdi
  callq *%r12
  ud2
  .cfi_endproc
  .size cuattn_emu_fiber_start, .-cuattn_emu_fiber_start

#endif

#if defined(__ELF__)
  .section .note.GNU-stack, "", @progbits
#endif
