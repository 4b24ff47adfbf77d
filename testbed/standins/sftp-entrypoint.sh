#!/bin/bash
# atmoz/sftp's contract on Debian's sshd: one user per argument, user:pass:uid:gid:dir1,dir2.
set -euo pipefail
cat > /etc/ssh/sshd_config <<CONF
Protocol 2
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_rsa_key
UseDNS no
PermitRootLogin no
X11Forwarding no
AllowTcpForwarding no
PasswordAuthentication no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
ChrootDirectory %h
AuthorizedKeysFile .ssh/authorized_keys
CONF
for type in ed25519 rsa; do
  [ -f "/etc/ssh/ssh_host_${type}_key" ] || ssh-keygen -q -t "$type" -N "" -f "/etc/ssh/ssh_host_${type}_key"
done
for spec in "$@"; do
  IFS=: read -r user pass uid gid dirs <<<"$spec"
  getent group "$gid" >/dev/null || groupadd -g "$gid" "grp$gid"
  id "$user" >/dev/null 2>&1 || useradd -M -d "/home/$user" -s /usr/sbin/nologin -u "$uid" -g "$gid" -o "$user"
  usermod -p '*' "$user"  # no password, key only (and not "locked" for sshd)
  mkdir -p "/home/$user/.ssh"
  chown root:root "/home/$user" && chmod 755 "/home/$user"
  cat "/home/$user/.ssh/keys/"*.pub > "/home/$user/.ssh/authorized_keys" 2>/dev/null || true
  chown "$uid" "/home/$user/.ssh/authorized_keys" && chmod 600 "/home/$user/.ssh/authorized_keys"
  IFS=, read -ra folders <<<"${dirs:-}"
  for d in "${folders[@]}"; do
    mkdir -p "/home/$user/$d" && chown "$uid:$gid" "/home/$user/$d"
  done
done
exec /usr/sbin/sshd -D -e
