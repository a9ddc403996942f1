//! Per-CPU storage and the safe containers built on the op contract.
