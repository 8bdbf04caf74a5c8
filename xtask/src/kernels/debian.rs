//! Debian's kernels: the host tools the VMs need, and each suite's kernel
//! fetched through apt with a private state directory and unpacked.

use super::*;

pub(super) fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null 2>&1", "sh", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

pub(super) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub(super) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// QEMU, busybox, kmod, udev from apt; virtme-ng from PyPI.
pub(super) fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .filter(|(c, _)| !have(c))
        .map(|(_, p)| *p)
        .collect();
    if !missing.is_empty() {
        println!("xtask: installing {}", missing.join(" "));
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !have("vng") {
        println!("xtask: pip install virtme-ng");
        run(Command::new("python3").args(["-m", "pip", "install", "-q", "virtme-ng"]))?;
        if !have("vng") {
            bail!("virtme-ng installed but `vng` is not on PATH");
        }
    }
    Ok(())
}

/// apt with its own sources, lists and cache under target/kernels/apt.
pub(super) struct Apt {
    pub(super) dir: PathBuf,
}

impl Apt {
    pub(super) fn new() -> Result<Self> {
        let dir = kernels_dir().join("apt");
        for d in [
            "lists/partial",
            "cache/archives/partial",
            "sources.list.d",
            "preferences.d",
        ] {
            fs::create_dir_all(dir.join(d))?;
        }
        let mut list = String::new();
        for (_, suite) in KERNELS {
            list.push_str(&format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {suite} main\n"
            ));
        }
        fs::write(dir.join("sources.list"), list)?;
        Ok(Apt { dir })
    }

    pub(super) fn opts(&self) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        vec![
            format!("-oDir::Etc::sourcelist={}", d("sources.list")),
            format!("-oDir::Etc::sourceparts={}", d("sources.list.d")),
            format!("-oDir::Etc::preferencesparts={}", d("preferences.d")),
            format!("-oDir::State::Lists={}", d("lists")),
            format!("-oDir::Cache={}", d("cache")),
            "-oAPT::Sandbox::User=root".into(),
            "-oAcquire::Languages=none".into(),
            "-q".into(),
        ]
    }

    pub(super) fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.opts());
        c
    }

    /// `apt-get update` unless the lists are younger than six hours.
    pub(super) fn update(&self) -> Result<()> {
        let stamp = self.dir.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(6 * 3600));
        if !fresh {
            println!("xtask: apt-get update (Debian suites for kernels)");
            run(self.cmd("apt-get").arg("update"))?;
            fs::write(&stamp, "")?;
        }
        Ok(())
    }

    /// Version of `pkg` in `suite`.
    pub(super) fn version_in(&self, pkg: &str, suite: &str) -> Result<String> {
        let out = output(self.cmd("apt-cache").args(["madison", pkg]))?;
        for line in out.lines() {
            let f: Vec<&str> = line.split('|').map(str::trim).collect();
            if f.len() >= 3
                && f[2]
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|s| s.split('/').next() == Some(suite))
            {
                return Ok(f[1].to_string());
            }
        }
        bail!("{pkg} not found in {suite}")
    }

    pub(super) fn depends(&self, pkg: &str, version: &str) -> Result<Vec<String>> {
        let out = output(
            self.cmd("apt-cache")
                .args(["show", &format!("{pkg}={version}")]),
        )?;
        let line = out
            .lines()
            .find(|l| l.starts_with("Depends:"))
            .unwrap_or("Depends:");
        Ok(line["Depends:".len()..]
            .split(',')
            .flat_map(|alt| alt.split('|'))
            .filter_map(|d| d.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }
}

/// A kernel line resolved to Debian packages.
pub(super) struct Resolved {
    pub(super) release: String,
    pub(super) version: String,
    pub(super) packages: Vec<String>,
}

pub(super) fn resolve(apt: &Apt, suite: &str) -> Result<Resolved> {
    let meta = "linux-image-amd64";
    let version = apt.version_in(meta, suite)?;
    let image = apt
        .depends(meta, &version)?
        .into_iter()
        .find(|d| d.starts_with("linux-image-") && d != meta)
        .with_context(|| format!("{meta} {version} depends on no linux-image-*"))?;
    let release = image["linux-image-".len()..].to_string();
    let mut packages = vec![image.clone()];
    // 6.16+ split the image: vmlinuz in linux-binary-*, modules in linux-modules-*.
    for d in apt.depends(&image, &version)? {
        if d == format!("linux-binary-{release}") || d == format!("linux-modules-{release}") {
            packages.push(d);
        }
    }
    Ok(Resolved {
        release,
        version,
        packages,
    })
}

/// Downloads and unpacks a kernel once; returns its vmlinuz.
pub(super) fn fetch(apt: &Apt, r: &Resolved) -> Result<PathBuf> {
    let dir = kernels_dir().join(&r.release);
    let root = dir.join("root");
    let vmlinuz = root.join(format!("boot/vmlinuz-{}", r.release));
    let modules = root.join(format!("lib/modules/{}", r.release));
    if vmlinuz.exists() && modules.join("modules.dep").exists() {
        return Ok(vmlinuz);
    }
    let _ = fs::remove_dir_all(&root);
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    fs::create_dir_all(&root)?;
    println!(
        "xtask: downloading {} ({})",
        r.packages.join(" "),
        r.version
    );
    let specs: Vec<String> = r
        .packages
        .iter()
        .map(|p| format!("{p}={}", r.version))
        .collect();
    run(apt
        .cmd("apt-get")
        .arg("download")
        .args(&specs)
        .current_dir(&debs))?;
    for entry in fs::read_dir(&debs)? {
        let deb = entry?.path();
        if deb.extension().is_none_or(|e| e != "deb") {
            continue;
        }
        let excludes: Vec<String> = SKIP_MODULES
            .iter()
            .map(|m| format!("--exclude=*/kernel/{m}"))
            .collect();
        let script = format!(
            "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" {}",
            excludes
                .iter()
                .map(|e| format!("'{e}'"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        run(Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(&deb)
            .arg(&root))?;
    }
    // One layout for all: boot/vmlinuz-R and lib/modules/R.
    let usr_modules = root.join(format!("usr/lib/modules/{}", r.release));
    if usr_modules.exists() && !modules.exists() {
        fs::create_dir_all(root.join("lib/modules"))?;
        fs::rename(&usr_modules, &modules)?;
    }
    let in_modules = modules.join("vmlinuz");
    if !vmlinuz.exists() && in_modules.exists() {
        fs::create_dir_all(root.join("boot"))?;
        fs::rename(&in_modules, &vmlinuz)?;
    }
    if !vmlinuz.exists() {
        bail!("{}: no vmlinuz in {}", r.release, r.packages.join(" "));
    }
    run(Command::new("depmod").arg("-b").arg(&root).arg(&r.release))?;
    fs::remove_dir_all(&debs)?;
    Ok(vmlinuz)
}
