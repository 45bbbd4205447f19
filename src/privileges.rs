//! Dropping root privileges after the ports are bound.

use std::ffi::CString;

use anyhow::{Context as _, Result, bail};

/// Switch to `user` (and `group`, or the user's primary group) if running as root.
/// Returns the user switched to, or None when nothing was done.
pub fn drop_to(user: Option<&str>, group: Option<&str>) -> Result<Option<String>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let Some(user) = user else {
        tracing::warn!("running as root: set run_as_user in the config to drop privileges");
        return Ok(None);
    };
    let cuser = CString::new(user).context("invalid run_as_user")?;
    // SAFETY: getpwnam reads a static buffer; we copy what we need before any other call.
    let pw = unsafe { libc::getpwnam(cuser.as_ptr()) };
    if pw.is_null() {
        bail!("run_as_user {user:?}: no such user");
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    let (uid, mut gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    if let Some(group) = group {
        let cgroup = CString::new(group).context("invalid run_as_group")?;
        // SAFETY: as getpwnam above.
        let gr = unsafe { libc::getgrnam(cgroup.as_ptr()) };
        if gr.is_null() {
            bail!("run_as_group {group:?}: no such group");
        }
        // SAFETY: gr is non-null.
        gid = unsafe { (*gr).gr_gid };
    }
    // Order matters: groups first, while we still may change them.
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        if libc::setgroups(1, &gid) != 0 {
            bail!("setgroups: {}", std::io::Error::last_os_error());
        }
        if libc::setgid(gid) != 0 {
            bail!("setgid: {}", std::io::Error::last_os_error());
        }
        if libc::setuid(uid) != 0 {
            bail!("setuid: {}", std::io::Error::last_os_error());
        }
        if libc::setuid(0) == 0 {
            bail!("privileges could not be dropped: setuid(0) still works");
        }
    }
    Ok(Some(user.to_string()))
}

/// Create the data dir and, when running as root with `run_as_user`, give the directory
/// itself to that user and drop privileges: everything inside is then created by the user
/// the daemons run as, whichever command created it first.
pub fn enter_data_dir(config: &hermod_common::Config) -> Result<Option<String>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0
        && let Some(user) = config.run_as_user.as_deref()
    {
        let cuser = CString::new(user).context("invalid run_as_user")?;
        // SAFETY: see drop_to.
        let pw = unsafe { libc::getpwnam(cuser.as_ptr()) };
        if pw.is_null() {
            bail!("run_as_user {user:?}: no such user");
        }
        // SAFETY: pw is non-null.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        std::os::unix::fs::chown(&config.data_dir, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {}", config.data_dir.display()))?;
    }
    drop_to(
        config.run_as_user.as_deref(),
        config.run_as_group.as_deref(),
    )
}
