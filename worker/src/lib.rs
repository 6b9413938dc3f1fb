//! The job consumer (claiming, leases, executors). The provisioning issue fills it in.
