//! hoist: the coordinator server and the operator CLI.
