//! Real keys (`ssh-keygen -t ... -N ''`, OpenSSH 9.2p1), the same as the
//! library's unit tests use.

pub const KEYS: [&str; 3] = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICB4vafQSnsv3bDYYiG8B789n5ZvxYvX222J5kElsBaO c_ed25519",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDCzXaDV21nla3TpUaF7zGaYz014eGNM0EFhGL2sdjeA140nIHis/AS7eVpfzMJG+ljxcVnjw6FiFZmklu7SbEQ= c_ecdsab256",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCIdqKfIWneJnOiLFQNjXNzj1R7SWgl5YxjX/FZ1BvB9E1tzKxsnyEGqXPiuPXVpOSAGUw+J52BQpzfAd4RO0zzw4KDSEBelqIeqGL/ZtOmRC5LSCnxWcaI6rQ+eho1lDRHXzW02gGqsBIyzeYBNdVcZqBSQhB05rrJooc9/S3ViSrCmrDwqCsUI5PtowgG24b6RR/a2fXHos+OFpN8fkKxAQGIRVR8uwiza3yC3O1BmJBNBNZKi3Qh+/lYl3+dN9Kd87705aJJ/76mIZvUCaw6QyoJzPH8bnpQObiclWyir7pExRQGlGz6iSVZEEVY7h3fVL1LV77Ge2cDTx4n4Bp7 c_rsab2048",
];
