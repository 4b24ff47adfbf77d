{{/* Chart name, overridable with nameOverride. */}}
{{- define "etl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name, the prefix of every resource (63 characters at most). */}}
{{- define "etl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: fullname-component (call with dict "ctx" . "component" "x"). */}}
{{- define "etl.componentName" -}}
{{- printf "%s-%s" (include "etl.fullname" .ctx | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{/* chart label: name-version. */}}
{{- define "etl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Minimal selector labels of a component (name, instance, component); never change on upgrade. */}}
{{- define "etl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "etl.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full labels of a component's objects: selector labels plus version, chart and manager. */}}
{{- define "etl.labels" -}}
{{ include "etl.selectorLabels" . }}
app.kubernetes.io/part-of: {{ include "etl.name" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "etl.chart" .ctx }}
{{- end -}}

{{/* ServiceAccount name of every pod. */}}
{{- define "etl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "etl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image of an ETL service (call with dict "ctx" . "component" "api"); the tag defaults to appVersion. */}}
{{- define "etl.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .ctx.Values.image.tag -}}
{{- printf "%setl-%s:%s" .ctx.Values.image.registry .component $tag -}}
{{- end -}}

{{/* Name of the Secret holding the secret values (the chart's or secrets.existingSecret). */}}
{{- define "etl.secretName" -}}
{{- default (include "etl.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Name of the ConfigMap of shared settings. */}}
{{- define "etl.configName" -}}
{{- include "etl.fullname" . -}}-config
{{- end -}}

{{/* PVC of the SQLite file and run files. */}}
{{- define "etl.dataClaim" -}}
{{- default (printf "%s-data" (include "etl.fullname" .)) .Values.saver.persistence.existingClaim -}}
{{- end -}}

{{/* true when the saver uploads files (an in-cluster or external SFTP server is configured). */}}
{{- define "etl.uploadEnabled" -}}
{{- if or .Values.sftp.enabled .Values.externalSftp.host -}}true{{- end -}}
{{- end -}}

{{/* SFTP endpoint the saver uses: host, port, user, remoteDir. */}}
{{- define "etl.sftpEndpoint" -}}
{{- if .Values.sftp.enabled -}}
host: {{ include "etl.componentName" (dict "ctx" . "component" "sftp") }}
port: "22"
user: {{ .Values.sftp.user }}
remoteDir: {{ .Values.sftp.remoteDir }}
{{- else -}}
host: {{ .Values.externalSftp.host }}
port: {{ .Values.externalSftp.port | quote }}
user: {{ .Values.externalSftp.user }}
remoteDir: {{ .Values.externalSftp.remoteDir }}
{{- end -}}
{{- end -}}

{{/* Pod security context of the ETL pods: non-root, fixed ids, RuntimeDefault seccomp. */}}
{{- define "etl.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context meeting the restricted Pod Security Standard. */}}
{{- define "etl.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod spec fields every pod shares: account, no token, pull secrets, security (dict "ctx" . ["securityContext"]). */}}
{{- define "etl.podCommon" -}}
{{- /* securityContext: the pod's own, instead of the ETL pods' non-root one (redis, sftp). preInstall: a hook pod
that runs before the release's own ServiceAccount exists, so it takes the namespace's default one (no token). */ -}}
{{- if and .preInstall .ctx.Values.serviceAccount.create }}
serviceAccountName: default
{{- else }}
serviceAccountName: {{ include "etl.serviceAccountName" .ctx }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- if .securityContext }}
  {{- toYaml .securityContext | nindent 2 }}
  {{- else }}
  {{- include "etl.podSecurityContext" .ctx | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Pod template of a component: metadata and the shared spec fields; the caller adds containers and volumes. */}}
{{- define "etl.podTemplate" -}}
{{- /*
Shared by every workload, as the pushgateway chart shares its podSpec. Call with dict "ctx" . "component" "api"
"values" .Values.api "grace" 30 and, optionally, "checksum" true (roll the pods when the ConfigMap changes),
"restartPolicy", "securityContext" (see etl.podCommon) and "affinity" (the component's own rules; they win over
the user's). nodeSelector, tolerations and affinity come from the component's values, else the global ones;
podAnnotations from both, the component's winning. The caller goes on at the pod spec's indentation.
*/ -}}
{{- $ctx := .ctx -}}
{{- $annotations := merge (deepCopy (.values.podAnnotations | default dict)) ($ctx.Values.podAnnotations | default dict) -}}
{{- $affinity := merge (deepCopy (.affinity | default dict)) (.values.affinity | default $ctx.Values.affinity | default dict) -}}
metadata:
  labels:
    {{- include "etl.labels" . | nindent 4 }}
  {{- if or .checksum $annotations }}
  annotations:
    {{- if .checksum }}
    checksum/config: {{ include (print $ctx.Template.BasePath "/common/configmap.yaml") $ctx | sha256sum }}
    {{- end }}
    {{- with $annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  {{- include "etl.podCommon" . | nindent 2 }}
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .grace }}
  {{- with (.values.nodeSelector | default $ctx.Values.nodeSelector) }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (.values.tolerations | default $ctx.Values.tolerations) }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* true when the system of record is PostgreSQL (database.engine), empty on SQLite. */}}
{{- define "etl.postgresql" -}}
{{- if eq .Values.database.engine "postgresql" -}}true{{- end -}}
{{- end -}}

{{/* true when KEDA scales the savers: only on PostgreSQL, as SQLite has exactly one saver. */}}
{{- define "etl.kedaSaver" -}}
{{- if and .Values.keda.enabled (include "etl.postgresql" .) -}}true{{- end -}}
{{- end -}}

{{/* The database URL of a container from the operator's Secret (dict "ctx" . "role" "saver"|"api"); empty on SQLite. */}}
{{- define "etl.databaseEnv" -}}
{{- $db := .ctx.Values.database -}}
{{- if include "etl.postgresql" .ctx -}}
{{- if and (eq .role "api") $db.apiUrlKey }}
# A read-only role (or a replica): the API never holds the saver's credentials.
- name: ETL_API_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.apiExistingSecret | default $db.existingSecret }}
      key: {{ $db.apiUrlKey }}
{{- else }}
- name: ETL_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret }}
      key: {{ $db.urlKey }}
{{- end }}
{{- if and (eq .role "api") $db.consoleUrlKey }}
# The SQL console's own login: a role granted the typed columns alone.
- name: ETL_API_SQL_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.apiExistingSecret | default $db.existingSecret }}
      key: {{ $db.consoleUrlKey }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Egress rule to PostgreSQL (database.cidrs, else any address on its port); empty on SQLite. */}}
{{- define "etl.databaseEgress" -}}
{{- if include "etl.postgresql" . -}}
- to:
    {{- range (.Values.database.cidrs | default (list "0.0.0.0/0")) }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    - {port: {{ .Values.database.port }}, protocol: TCP}
{{- end -}}
{{- end -}}

{{/* The API's own affinity on SQLite: on the saver's node, as SQLite WAL needs one host (none on PostgreSQL). */}}
{{- define "etl.api.affinity" -}}
{{- if not (include "etl.postgresql" .) }}
podAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "etl.selectorLabels" (dict "ctx" . "component" "saver") | nindent 10 }}
{{- end }}
{{- end -}}

{{/* The saver's own affinity when the API runs on SQLite: back to the API's node after a Recreate. */}}
{{- define "etl.saver.affinity" -}}
{{- /* The API requires the saver's node, and a ReadWriteOnce volume still mounted there could not be attached
to another node anyway. */ -}}
{{- if and .Values.api.enabled (not (include "etl.postgresql" .)) -}}
podAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "etl.selectorLabels" (dict "ctx" . "component" "api") | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* Environment of an ETL container: shared ConfigMap, Secret values by reference, the Redis URL. */}}
{{- define "etl.env" -}}
{{- $ctx := .ctx -}}
envFrom:
  - configMapRef:
      name: {{ include "etl.configName" $ctx }}
env:
  - name: ETL_CONSUMER_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  {{- if $ctx.Values.redis.enabled }}
  # The password stays in the Secret; Kubernetes expands $(ETL_REDIS_PASSWORD) when the pod starts.
  - name: ETL_REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "etl.secretName" $ctx }}
        key: redis-password
  - name: ETL_REDIS_URL
    value: "redis://:$(ETL_REDIS_PASSWORD)@{{ include "etl.componentName" (dict "ctx" $ctx "component" "redis") }}:6379/0"
  {{- else }}
  - name: ETL_REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "etl.secretName" $ctx }}
        key: redis-url
  {{- end }}
  {{- range $k, $v := .env }}
  - name: {{ $k }}
    value: {{ $v | toString | quote }}
  {{- end }}
{{- end -}}

{{/* Scratch space (/tmp) of a read-only container. */}}
{{- define "etl.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/* HTTP probes of a worker's ops endpoint: liveness on the heartbeat, readiness on Redis. */}}
{{- define "etl.opsProbes" -}}
startupProbe:
  httpGet: {path: /healthz, port: ops}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: ops}
  periodSeconds: 15
  timeoutSeconds: 3
  failureThreshold: 4
readinessProbe:
  httpGet: {path: /readyz, port: ops}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* DNS egress rule shared by every NetworkPolicy. */}}
{{- define "etl.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dnsNamespaceSelector | nindent 10 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}

{{/* Egress rule to Redis (in-cluster pod or externalRedis.cidrs). */}}
{{- define "etl.redisEgress" -}}
{{- if .Values.redis.enabled -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "etl.selectorLabels" (dict "ctx" . "component" "redis") | nindent 10 }}
  ports:
    - {port: 6379, protocol: TCP}
{{- else -}}
{{- /* No ranges given: any address, on the Redis port only. */}}
- to:
    {{- range (.Values.externalRedis.cidrs | default (list "0.0.0.0/0")) }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    - {port: {{ .Values.externalRedis.port }}, protocol: TCP}
{{- end -}}
{{- end -}}

{{/* Ingress rule to a metrics port from Prometheus' namespaces and the release's test pod. */}}
{{- define "etl.metricsIngress" -}}
- from:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .ctx.Values.networkPolicy.metricsNamespaceSelector | nindent 10 }}
    - podSelector:
        matchLabels:
          {{- include "etl.selectorLabels" (dict "ctx" .ctx "component" "test") | nindent 10 }}
  ports:
    - {port: {{ .port }}, protocol: TCP}
{{- end -}}

{{/* Fails the render with a clear message when values contradict each other. */}}
{{- define "etl.validateValues" -}}
{{- $errors := list -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- $errors = append $errors "image.tag: \"latest\" is not allowed; use a version (default: the chart's appVersion)" -}}
{{- end -}}
{{- if and (not .Values.redis.enabled) (not .Values.secrets.redisUrl) (not .Values.secrets.existingSecret) -}}
{{- $errors = append $errors "redis.enabled is false: set secrets.redisUrl (or a redis-url key in secrets.existingSecret)" -}}
{{- end -}}
{{- if and .Values.sftp.enabled .Values.externalSftp.host -}}
{{- $errors = append $errors "set either sftp.enabled (in-cluster server) or externalSftp.host, not both" -}}
{{- end -}}
{{- if and (include "etl.uploadEnabled" .) (not .Values.secrets.existingSecret) -}}
{{- if not .Values.secrets.sftpPrivateKey -}}
{{- $errors = append $errors "the files are uploaded: set secrets.sftpPrivateKey (or use secrets.existingSecret)" -}}
{{- end -}}
{{- if not .Values.secrets.sftpKnownHosts -}}
{{- $errors = append $errors "the files are uploaded: set secrets.sftpKnownHosts to pin the server's host key (or use secrets.existingSecret)" -}}
{{- end -}}
{{- if and .Values.encryption.enabled (not .Values.secrets.encryptionRecipients) -}}
{{- $errors = append $errors "encryption.enabled: set secrets.encryptionRecipients to age public keys (python -m saver keygen), or turn encryption off" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.sftp.enabled (not .Values.sftp.existingSecret) (not (and .Values.sftp.authorizedKey .Values.sftp.hostKey)) -}}
{{- $errors = append $errors "sftp.enabled: set sftp.authorizedKey and sftp.hostKey (scripts/gen-keys.sh), or sftp.existingSecret" -}}
{{- end -}}
{{- if and .Values.api.ingress.tls.enabled (not .Values.api.ingress.host) -}}
{{- $errors = append $errors "api.ingress.tls.enabled needs api.ingress.host" -}}
{{- end -}}
{{- if and .Values.transformer.autoscaling.enabled (gt (int .Values.transformer.autoscaling.minReplicas) (int .Values.transformer.autoscaling.maxReplicas)) -}}
{{- $errors = append $errors "transformer.autoscaling.minReplicas is above maxReplicas" -}}
{{- end -}}
{{- if and .Values.api.enabled (not .Values.api.replicas) -}}
{{- $errors = append $errors "api.replicas must be at least 1 (or api.enabled false)" -}}
{{- end -}}
{{- if include "etl.postgresql" . -}}
{{- if not .Values.database.existingSecret -}}
{{- $errors = append $errors (printf "database.engine is postgresql: set database.existingSecret to the Secret holding the URL (key %s, database.urlKey)" .Values.database.urlKey) -}}
{{- end -}}
{{- else -}}
{{- if gt (int .Values.saver.replicas) 1 -}}
{{- $errors = append $errors (printf "saver.replicas is %v: SQLite has exactly one writer; keep 1, or set database.engine postgresql to run several savers" .Values.saver.replicas) -}}
{{- end -}}
{{- if or .Values.database.existingSecret .Values.database.apiUrlKey .Values.database.consoleUrlKey -}}
{{- $errors = append $errors "database.existingSecret, apiUrlKey and consoleUrlKey are for PostgreSQL: set database.engine postgresql, or leave them empty" -}}
{{- end -}}
{{- end -}}
{{- if .Values.keda.enabled -}}
{{- if not .Values.redis.enabled -}}
{{- $errors = append $errors "keda.enabled needs the in-cluster Redis (redis.enabled): KEDA's redis-streams scaler takes an address and a password, not secrets.redisUrl" -}}
{{- end -}}
{{- if .Values.transformer.autoscaling.enabled -}}
{{- $errors = append $errors "set either keda.enabled or transformer.autoscaling.enabled, not both (two autoscalers would fight over the transformers)" -}}
{{- end -}}
{{- range $name := list "transformer" "saver" -}}
{{- $s := get $.Values.keda $name -}}
{{- if gt (int $s.minReplicas) (int $s.maxReplicas) -}}
{{- $errors = append $errors (printf "keda.%s.minReplicas is above maxReplicas" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\nVALUES ERROR:\n  - %s\n" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}

{{/* Service in front of a worker's ops port: scraped by the ServiceMonitor, asked by helm test. */}}
{{- define "etl.opsService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "etl.componentName" . }}
  labels:
    {{- include "etl.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "etl.selectorLabels" . | nindent 4 }}
  ports:
    - {name: metrics, port: {{ .ctx.Values.config.opsPort }}, targetPort: ops, protocol: TCP}
{{- end -}}

{{/* host:port of the worker Services the helm test asks for /readyz. */}}
{{- define "etl.testWorkers" -}}
{{- $out := list -}}
{{- if and .Values.extractor.enabled (eq .Values.extractor.mode "deployment") -}}
{{- $out = append $out (printf "%s:%v" (include "etl.componentName" (dict "ctx" . "component" "extractor")) .Values.config.opsPort) -}}
{{- end -}}
{{- if .Values.transformer.enabled -}}
{{- $out = append $out (printf "%s:%v" (include "etl.componentName" (dict "ctx" . "component" "transformer")) .Values.config.opsPort) -}}
{{- end -}}
{{- $out = append $out (printf "%s:%v" (include "etl.componentName" (dict "ctx" . "component" "saver")) .Values.config.opsPort) -}}
{{- join " " $out -}}
{{- end -}}
