@{
    RootModule           = 'TpmProvisioning.dll'
    ModuleVersion        = '0.1.0'
    GUID                 = '5b0f1f8e-6f2c-4d0e-9a59-3f1c2f7e9b41'
    Author               = 'TpmProvisioning contributors'
    CompanyName          = 'TpmProvisioning'
    Copyright            = '(c) TpmProvisioning contributors. All rights reserved.'
    Description          = 'TPM-rooted device provisioning, Keylime-compatible remote attestation and attestation-gated key release: cmdlets, an in-process REST server and a device agent.'
    PowerShellVersion    = '7.6'
    CompatiblePSEditions = @('Core')
    FormatsToProcess     = @('TpmProvisioning.format.ps1xml', 'TpmProvisioning.Tpm.format.ps1xml', 'TpmProvisioning.Provisioning.format.ps1xml', 'TpmProvisioning.Attestation.format.ps1xml', 'TpmProvisioning.Kms.format.ps1xml')
    CmdletsToExport      = @(
        'Start-ProvisioningServer'
        'Get-ProvisioningServer'
        'Stop-ProvisioningServer'
        'Get-ProvisioningServerLog'
        'Get-ProvisioningAuditLog'
        'Start-TpmSimulator'
        'Get-TpmSimulator'
        'Stop-TpmSimulator'
        'Get-TpmInfo'
        'Get-TpmPcr'
        'Get-TpmEndorsementKey'
        'New-TpmAttestationKey'
        'Get-IntegrityQuote'
        'Test-TpmQuote'
        'New-TpmProvisioning'
        'New-ProvisioningApiKey'
        'Get-ProvisioningApiKey'
        'Set-ProvisioningApiKey'
        'Remove-ProvisioningApiKey'
        'Get-ManufacturingRecord'
        'Add-TpmManufacturerCa'
        'Get-TpmManufacturerCa'
        'Remove-TpmManufacturerCa'
        'New-TpmCa'
        'Import-TpmCa'
        'Export-TpmCa'
        'Register-AttestationAgent'
        'Get-AttestationAgent'
        'Start-AgentAttestation'
        'Stop-AgentAttestation'
        'Test-AgentAttestation'
        'New-AttestationPolicy'
        'Remove-AttestationAgent'
        'New-ProvisioningClientCertificate'
        'Export-ProvisioningCertificate'
        'Import-ProvisioningCertificate'
        'New-KmsProvider'
        'Get-KmsProvider'
        'Set-KmsProvider'
        'Remove-KmsProvider'
        'New-KmsKey'
        'Get-KmsKey'
        'Add-KmsKeyVersion'
        'Get-KmsKeyVersion'
        'New-KmsUser'
        'Get-KmsUser'
        'Remove-KmsUser'
        'Get-KmsDataKey'
    )
    FunctionsToExport    = @()
    AliasesToExport      = @()
    VariablesToExport    = @()
    PrivateData          = @{
        PSData = @{
            Tags       = @('TPM', 'Attestation', 'Keylime', 'Provisioning', 'KMS', 'PSEdition_Core', 'Linux', 'Windows')
            ProjectUri = 'https://example.invalid/TpmProvisioning'
        }
    }
}
