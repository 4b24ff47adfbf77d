# Stand-in for python:<version>-alpine (tests only): Debian's Python, this machine's CA bundle and pip
# configuration (so pip reaches the package index from inside a build), Alpine's user tools as wrappers.
FROM etl-standin/debian:bookworm
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip/ /etc/
COPY addgroup adduser /usr/local/sbin/
RUN ln -s /usr/bin/python3 /usr/local/bin/python && chmod 755 /usr/local/sbin/addgroup /usr/local/sbin/adduser
CMD ["python3"]
