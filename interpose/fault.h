/* The debug allocator's SIGSEGV/SIGBUS reporter (fault.c). */
#ifndef MT_INTERPOSE_FAULT_H
#define MT_INTERPOSE_FAULT_H

/* Install when debug mode uses guard pages; called once after allocator init. */
void mt_fault_install(void);

#endif
