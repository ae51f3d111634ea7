{{/*
Names. name/fullname follow `helm create` (and the marketplace chart), so a release upgraded
in place keeps its Deployment name and selector.
*/}}
{{- define "ack-secret-manager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ack-secret-manager.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Cluster-scoped objects (ClusterRole, ClusterRoleBinding) carry the namespace too, so two
releases of the same name in different namespaces never collide. ":" cannot occur in a
namespace or a release name, so the name is unambiguous.
*/}}
{{- define "ack-secret-manager.clusterName" -}}
{{- printf "%s:%s" (include "ack-secret-manager.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "ack-secret-manager.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ack-secret-manager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ack-secret-manager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ack-secret-manager.labels" -}}
{{ include "ack-secret-manager.selectorLabels" . }}
helm.sh/chart: {{ include "ack-secret-manager.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: ack-secret-manager
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ack-secret-manager.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ack-secret-manager.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Go controller's images (marketplace values carry them) do not understand this chart's
flags: they are replaced by this chart's image. "true" when the configured image is one.
*/}}
{{- define "ack-secret-manager.legacyImage" -}}
{{- $tag := toString (.Values.image.tag | default "") }}
{{- if and (hasSuffix "/acs/ack-secret-manager" (toString .Values.image.repository)) (regexMatch "^v0\\.[0-6]\\.[0-9]+" $tag) }}true{{ end }}
{{- end }}

{{- define "ack-secret-manager.image" -}}
{{- if include "ack-secret-manager.legacyImage" . }}
{{- printf "ack-secret-manager:%s" .Chart.AppVersion }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (toString (.Values.image.tag | default .Chart.AppVersion)) }}
{{- end }}
{{- end }}

{{/* A comma-separated namespace list from a string or a list value. */}}
{{- define "ack-secret-manager.csv" -}}
{{- if kindIs "slice" . }}{{ join "," . }}{{ else if . }}{{ toString . | nospace }}{{ end }}
{{- end }}

{{/* "true" when leader election is on (see values.yaml leaderElection.enabled). */}}
{{- define "ack-secret-manager.leaderElect" -}}
{{- $explicit := .Values.leaderElection.enabled }}
{{- if kindIs "bool" $explicit }}
{{- if $explicit }}true{{ end }}
{{- else if or (gt (int .Values.replicaCount) 1) (eq (toString .Values.command.enableLeaderElection) "true") }}true
{{- end }}
{{- end }}

{{- define "ack-secret-manager.leaseNamespace" -}}
{{- .Values.leaderElection.namespace | default .Values.command.leaderElectionNamespace | default .Release.Namespace }}
{{- end }}

{{/*
The Lease's name: the release's full name, plus the release namespace when the Lease lives
in another namespace (two releases pointing at one Lease namespace must not share a Lease).
*/}}
{{- define "ack-secret-manager.leaseName" -}}
{{- $default := include "ack-secret-manager.fullname" . }}
{{- if ne (include "ack-secret-manager.leaseNamespace" .) .Release.Namespace }}
{{- $default = printf "%s-%s" $default .Release.Namespace }}
{{- end }}
{{- .Values.leaderElection.id | default $default }}
{{- end }}

{{/* True when the user supplies the OIDC token path themselves. */}}
{{- define "ack-secret-manager.userTokenPath" -}}
{{- range $name := list "ALICLOUD_OIDC_TOKEN_FILE_PATH" "ALICLOUD_OIDC_TOKEN_FILE" "ALIBABA_CLOUD_OIDC_TOKEN_FILE" }}
{{- if or (get ($.Values.env | default dict) $name) (hasKey ($.Values.envVarsFromSecret | default dict) $name) }}true{{ end }}
{{- end }}
{{- end }}

{{/*
A Go duration ("120s", "5m", "1h30m", "1.5h") in whole seconds; parts below a second are
dropped. Used for alert thresholds derived from command.pollingInterval.
*/}}
{{- define "ack-secret-manager.seconds" -}}
{{- $d := regexReplaceAll "[0-9.]+(ns|us|µs|ms)" (toString .) "" -}}
{{- $total := 0.0 -}}
{{- range $unit, $factor := dict "h" 3600.0 "m" 60.0 "s" 1.0 -}}
{{- $part := regexFind (printf "[0-9.]+%s" $unit) $d -}}
{{- if $part -}}
{{- $total = addf $total (mulf (trimSuffix $unit $part | float64) $factor) -}}
{{- end -}}
{{- end -}}
{{- if regexMatch "^[0-9.]+$" $d -}}{{- $total = float64 $d -}}{{- end -}}
{{- $total | int -}}
{{- end }}
