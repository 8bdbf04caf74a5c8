//! What only rotor's integration tests (`tests/*.rs`) use on top of the test
//! bed (`rotor_testbed`): peers rotor did not write, probes of the agent and
//! the kernel, and differential runs (direct against through rotor).

pub mod differential;
pub mod peers;
pub mod probe;
pub mod upgrade;
