# Stand-in for postgres:<version> (tests only): Debian's PostgreSQL (15 on bookworm) with the official image's
# contract: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB initialise an empty /var/lib/postgresql/data
# (password authentication over the network), an empty password refuses to start, root drops to postgres.
FROM etl-standin/debian:bookworm
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# Debian's package made a cluster of its own: the official image has none.
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh && rm -rf /var/lib/postgresql/15 /etc/postgresql/15 \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
