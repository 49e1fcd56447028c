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
{{- printf "nats://%s:$(%s)@%s:4222" .user .passwordEnv (include "toex.natsHost" .root) -}}
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

{{/* The environment of a service's containers (migrate and serve alike). */}}
{{- define "toex.serviceEnv" -}}
{{- $root := .root -}}
{{- $secret := include "toex.secretName" $root -}}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: nats-services-password}
- name: TOEX_NATS_URL
  value: {{ include "toex.natsUrl" (dict "root" $root "user" "services" "passwordEnv" "NATS_PASSWORD") | quote }}
{{- if eq $root.Values.postgresql.mode "operator" }}
- name: PGUSER
  valueFrom:
    secretKeyRef: {name: {{ include "toex.dbClusterName" . }}-app, key: username}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "toex.dbClusterName" . }}-app, key: password}
- name: TOEX_DATABASE_URL
  value: {{ printf "postgresql+asyncpg://$(PGUSER):$(PGPASSWORD)@%s-rw:5432/%s" (include "toex.dbClusterName" .) .svc.database | quote }}
{{- else }}
- name: TOEX_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .name }}-database-url}
{{- end }}
- name: TOEX_SERVICE_CLIENT_ID
  {{- /* A region installation's services use its own clients (toex-<service>-<region>). */}}
  value: {{ (eq $root.Values.role "region" | ternary (printf "%s-%s" .svc.clientId (lower $root.Values.region)) .svc.clientId) | quote }}
- name: TOEX_SERVICE_CLIENT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .name }}-client-secret}
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
