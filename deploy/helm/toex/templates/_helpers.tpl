{{/* Names, labels and the settings every service shares. */}}

{{- define "toex.fullname" -}}
{{- if contains "toex" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-toex" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "toex.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: toex
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
toex.police.uk/region: {{ .Values.region | lower | quote }}
{{- end -}}

{{- define "toex.selector" -}}
app.kubernetes.io/name: toex
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The region token used in NATS subjects and config file names: emsou ... yh, or hub. */}}
{{- define "toex.natsConfigName" -}}
{{- if eq .Values.role "hub" -}}hub{{- else -}}{{ .Values.region | lower }}{{- end -}}
{{- if .Values.tls.enabled -}}-tls{{- end -}}
{{- end -}}

{{- define "toex.secretName" -}}
{{- default (printf "%s-secrets" (include "toex.fullname" .)) .Values.secrets.name -}}
{{- end -}}

{{- define "toex.natsHost" -}}
{{- printf "%s-nats" (include "toex.fullname" .) -}}
{{- end -}}

{{/* nats://services:$(NATS_PASSWORD)@host:4222, the password expanded by Kubernetes from the env. */}}
{{- define "toex.natsUrl" -}}
{{- if eq .root.Values.nats.mode "deploy" -}}
{{- printf "%s://%s:$(%s)@%s:4222" (.root.Values.tls.enabled | ternary "tls" "nats") .user .passwordEnv (include "toex.natsHost" .root) -}}
{{- else -}}
{{- $u := urlParse .root.Values.nats.external.url -}}
{{- printf "%s://%s:$(%s)@%s" (get $u "scheme") .user .passwordEnv (get $u "host") -}}
{{- end -}}
{{- end -}}

{{- define "toex.image" -}}
{{- $svc := .svc -}}
{{- $img := .root.Values.image -}}
{{- $repo := printf "%s/%s%s" $img.registry $img.prefix .name -}}
{{- $override := $svc.image | default dict -}}
{{- if $override.digest -}}
{{- printf "%s@%s" ($override.repository | default $repo) $override.digest -}}
{{- else -}}
{{- printf "%s:%s" ($override.repository | default $repo) ($override.tag | default $img.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "toex.dbClusterName" -}}
{{- printf "%s-%s-db" (include "toex.fullname" .root) .name -}}
{{- end -}}

{{/* The environment of a service's containers; with "migrate" true, the migration's (which
     alone gets the database owner's credentials). */}}
{{- define "toex.serviceEnv" -}}
{{- $root := .root -}}
{{- $secret := include "toex.secretName" $root -}}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: nats-services-password}
- name: TOEX_NATS_URL
  value: {{ include "toex.natsUrl" (dict "root" $root "user" "services" "passwordEnv" "NATS_PASSWORD") | quote }}
{{- if eq $root.Values.postgresql.mode "operator" }}
{{- $cluster := include "toex.dbClusterName" . }}
{{- /* The service's runtime role; the owner's credentials only in the migration's container. */}}
- name: TOEX_DB_USER
  valueFrom:
    secretKeyRef: {name: {{ $cluster }}-runtime, key: username}
- name: TOEX_DB_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $cluster }}-runtime, key: password}
- name: TOEX_DATABASE_URL
  value: {{ printf "postgresql+asyncpg://$(TOEX_DB_USER):$(TOEX_DB_PASSWORD)@%s-rw:5432/%s%s" $cluster .svc.database (include "toex.dbTls" $root) | quote }}
{{- if .migrate }}
- name: TOEX_DB_OWNER
  valueFrom:
    secretKeyRef: {name: {{ $cluster }}-app, key: username}
- name: TOEX_DB_OWNER_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $cluster }}-app, key: password}
- name: TOEX_MIGRATION_DATABASE_URL
  value: {{ printf "postgresql+asyncpg://$(TOEX_DB_OWNER):$(TOEX_DB_OWNER_PASSWORD)@%s-rw:5432/%s%s" $cluster .svc.database (include "toex.dbTls" $root) | quote }}
{{- end }}
{{- else }}
- name: TOEX_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .name }}-database-url}
{{- if .migrate }}
- name: TOEX_MIGRATION_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .name }}-migration-database-url, optional: true}
{{- end }}
{{- end }}
{{- /* A service that calls no other service (clientId empty) has no client. */}}
{{- if .svc.clientId }}
- name: TOEX_SERVICE_CLIENT_ID
  {{- /* A region installation's services use its own clients (toex-<service>-<region>). */}}
  value: {{ (eq $root.Values.role "region" | ternary (printf "%s-%s" .svc.clientId (lower $root.Values.region)) .svc.clientId) | quote }}
- name: TOEX_SERVICE_CLIENT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .name }}-client-secret}
{{- end }}
- name: TOEX_OIDC_ISSUER
  value: {{ required "keycloak.issuer is required (the toex realm's issuer URL)" $root.Values.keycloak.issuer | quote }}
- name: TOEX_OIDC_AUDIENCE
  value: {{ $root.Values.settings.oidcAudience | quote }}
- name: TOEX_GRPC_HOST
  value: "0.0.0.0"
- name: TOEX_GRPC_PORT
  value: {{ .svc.port | quote }}
- name: TOEX_GRPC_GRACE_SECONDS
  value: {{ $root.Values.settings.grpcGraceSeconds | quote }}
- name: TOEX_LOG_LEVEL
  value: {{ $root.Values.settings.logLevel | quote }}
- name: TOEX_OTEL_EXPORTER
  value: {{ $root.Values.settings.otelExporter | quote }}
- name: TOEX_REGION
  value: {{ $root.Values.region | quote }}
{{- /* What the installation serves: its region's resources ("region") or the national team's
     ("hub", region NATIONAL); a service refuses to start on any other pair. */}}
{{- if not (has $root.Values.role (list "region" "hub")) }}
{{- fail (printf "role must be region or hub, not %q" $root.Values.role) }}
{{- end }}
{{- if ne (eq $root.Values.role "hub") (eq $root.Values.region "NATIONAL") }}
{{- fail (printf "role %s with region %q: the hub is region NATIONAL, a region installation a region's code" $root.Values.role $root.Values.region) }}
{{- end }}
- name: TOEX_INSTALLATION
  value: {{ $root.Values.role | quote }}
{{- if $root.Values.tls.enabled }}
{{- include "toex.tlsEnv" (dict "prefix" "TOEX_GRPC_TLS") }}
{{- include "toex.tlsEnv" (dict "prefix" "TOEX_NATS_TLS") }}
- name: TOEX_GRPC_TLS_CLIENT_CA_FILE
  value: /etc/toex/tls/ca.crt
- name: TOEX_GRPC_HEALTH_PORT
  value: {{ $root.Values.tls.healthPort | quote }}
- name: PGSSLROOTCERT
  value: /etc/toex/tls/ca.crt
{{- end }}
{{- range $callee := .svc.calls }}
{{- $target := index $root.Values.services $callee }}
- name: {{ printf "TOEX_%s_ADDRESS" (upper $callee) }}
  value: {{ printf "%s-%s:%v" (include "toex.fullname" $root) $callee $target.port | quote }}
{{- end }}
{{- range $k, $v := .svc.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{- define "toex.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
# A data volume's files are made the group's only when its root is not yet (not on every start).
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "toex.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* The query that makes asyncpg verify the database server's certificate and name
     (sslmode=verify-full) against PGSSLROOTCERT, CloudNativePG's CA for the service's cluster. */}}
{{- define "toex.dbTls" -}}
{{- if .Values.tls.enabled }}?ssl=verify-full{{ end -}}
{{- end -}}

{{/* A component's certificate files (cert-manager's Secret mounted at /etc/toex/tls). */}}
{{- define "toex.tlsEnv" }}
- name: {{ .prefix }}_CERT_FILE
  value: /etc/toex/tls/tls.crt
- name: {{ .prefix }}_KEY_FILE
  value: /etc/toex/tls/tls.key
- name: {{ .prefix }}_CA_FILE
  value: /etc/toex/tls/ca.crt
{{- end }}

{{/* The certificate Secret a pod mounts at /etc/toex/tls. */}}
{{- define "toex.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
{{- end -}}

{{/* A cert-manager Certificate from tls.issuerRef: name, dnsNames, usages. */}}
{{- define "toex.certificate" -}}
{{- $tls := .root.Values.tls -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ .name }}
  labels:
    {{- include "toex.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  secretName: {{ .name }}
  issuerRef:
    {{- toYaml $tls.issuerRef | nindent 4 }}
  duration: {{ $tls.duration }}
  renewBefore: {{ $tls.renewBefore }}
  commonName: {{ first .dnsNames }}
  dnsNames:
    {{- toYaml .dnsNames | nindent 4 }}
  usages:
    {{- toYaml .usages | nindent 4 }}
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
{{- end -}}

{{/* A Service's in-cluster names. */}}
{{- define "toex.dnsNames" -}}
{{- $ns := .namespace -}}
{{- range $host := .hosts }}
- {{ $host | quote }}
- {{ printf "%s.%s.svc" $host $ns | quote }}
- {{ printf "%s.%s.svc.cluster.local" $host $ns | quote }}
{{- end }}
{{- end -}}
