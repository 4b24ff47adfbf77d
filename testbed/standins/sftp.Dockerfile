# Stand-in for atmoz/sftp (tests only): Debian's OpenSSH with atmoz's entrypoint contract:
# arguments user:pass:uid:gid:dirs, a chroot at /home/<user>, keys from /home/<user>/.ssh/keys/*.pub.
FROM etl-standin/debian:bookworm
COPY sftp-entrypoint.sh /entrypoint
RUN chmod 755 /entrypoint && rm -f /etc/ssh/ssh_host_* && mkdir -p /run/sshd
EXPOSE 22
ENTRYPOINT ["/entrypoint"]
