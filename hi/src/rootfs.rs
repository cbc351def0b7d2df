//! Images without a registry: a root file system assembled from files of this host (programs,
//! the shared libraries `ldd` lists for them, the dynamic loader) and generated ones, packed
//! as a tar archive with fixed metadata and brought in with `docker import`. The tag is a hash
//! of the archive, so an unchanged root file system reuses its image and any change makes a
//! new one; older images of the same repository are removed when nothing uses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use bollard::Docker;
use sha2::{Digest, Sha256};

use crate::docker::{image_tags, import_archive, remove_image};

/// One entry: a directory (no content) or a file, with its owner.
struct Entry {
    mode: u32,
    owner: u32,
    content: Option<Vec<u8>>,
}

/// A root file system being assembled; paths are absolute.
#[derive(Default)]
pub struct RootFs {
    entries: BTreeMap<String, Entry>,
}

impl RootFs {
    /// A file owned by root.
    pub fn file(&mut self, path: &str, mode: u32, content: impl Into<Vec<u8>>) -> &mut Self {
        self.entries.insert(path.to_string(), Entry { mode, owner: 0, content: Some(content.into()) });
        self
    }

    /// A directory owned by `owner` (uid and gid).
    pub fn dir(&mut self, path: &str, mode: u32, owner: u32) -> &mut Self {
        self.entries.insert(path.to_string(), Entry { mode, owner, content: None });
        self
    }

    /// A file of this host at the same path (symbolic links followed).
    pub fn host_file(&mut self, path: &Path, mode: u32) -> Result<&mut Self> {
        let content = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(self.file(&path.display().to_string(), mode, content))
    }

    /// Every file under a directory of this host, at the same paths.
    pub fn host_tree(&mut self, dir: &Path) -> Result<&mut Self> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                self.host_tree(&path)?;
            } else if path.is_file() {
                self.host_file(&path, 0o644)?;
            }
        }
        Ok(self)
    }

    /// The shared libraries (and the loader) that `binary` loads, at their paths on this host.
    pub fn libraries_of(&mut self, binary: &Path) -> Result<&mut Self> {
        for lib in shared_libraries(binary)? {
            self.host_file(&lib, 0o755)?;
        }
        Ok(self)
    }

    /// The archive: entries in path order, with fixed times, so equal content gives equal bytes.
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, e) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            h.set_uid(e.owner as u64);
            h.set_gid(e.owner as u64);
            h.set_mtime(0);
            let name = path.trim_start_matches('/');
            match &e.content {
                Some(content) => {
                    h.set_size(content.len() as u64);
                    h.set_cksum();
                    tar.append_data(&mut h, name, content.as_slice())
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_cksum();
                    tar.append_data(&mut h, format!("{name}/"), std::io::empty())
                }
            }
            .with_context(|| format!("adding {path} to the image"))?;
        }
        Ok(tar.into_inner()?)
    }

    /// Imports the root file system as `repository:<hash>` unless that image exists, with
    /// Dockerfile-style `changes` (`ENV …`, `USER …`), and returns the tag.
    pub async fn import(&self, docker: &Docker, repository: &str, changes: &[&str]) -> Result<String> {
        let archive = self.to_tar()?;
        let mut hasher = Sha256::new();
        hasher.update(&archive);
        hasher.update(changes.join("\n"));
        let hash = hex::encode(hasher.finalize())[..16].to_string();
        let tag = format!("{repository}:{hash}");
        if docker.inspect_image(&tag).await.is_ok() {
            return Ok(tag);
        }
        import_archive(docker, repository, &hash, archive, changes).await?;
        prune(docker, repository, &tag).await?;
        Ok(tag)
    }
}

/// Removes the other images of `repository`, except those containers still use.
pub async fn prune(docker: &Docker, repository: &str, keep: &str) -> Result<()> {
    for old in image_tags(docker).await? {
        if old != keep && old.split(':').next() == Some(repository) {
            let _ = remove_image(docker, &old, false).await;
        }
    }
    Ok(())
}

/// The shared libraries a binary needs, as `ldd` resolves them (the loader included); none
/// for a module that needs nothing beyond what loads it.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("running ldd (install libc-bin)")?;
    ensure!(out.status.success(), "ldd {} failed: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::RootFs;

    fn sample(order: &[&str]) -> RootFs {
        let mut fs = RootFs::default();
        for p in order {
            fs.file(p, 0o644, p.as_bytes().to_vec());
        }
        fs.dir("/var/lib/x", 0o700, 999);
        fs
    }

    #[test]
    fn equal_content_gives_equal_archives() {
        let a = sample(&["/etc/a", "/bin/b"]).to_tar().unwrap();
        let b = sample(&["/bin/b", "/etc/a"]).to_tar().unwrap();
        assert_eq!(a, b, "entry order and build time do not change the archive");
        let c = sample(&["/etc/a", "/bin/c"]).to_tar().unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn directories_keep_their_owner() {
        let tar = sample(&["/etc/a"]).to_tar().unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let dir = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_str() == Some("var/lib/x/"))
            .expect("the directory is in the archive");
        assert_eq!(dir.header().uid().unwrap(), 999);
        assert_eq!(dir.header().mode().unwrap(), 0o700);
    }
}
