# Stand-in for redis:<version>-alpine (tests only): Debian's redis-server with the official image's
# behaviour: /data as working folder, protected mode off, no config file, running as the redis user.
FROM etl-standin/debian:bookworm
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh && mkdir -p /data && chown redis:redis /data
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
